#!/usr/bin/env bash
# Installs what `cargo build --release --features mpi` needs on Debian or Ubuntu: Open MPI
# (its `mpicc` and `mpirun`) and libclang, which the MPI bindings' bindgen loads at build time.
# Does nothing when both are there already.
set -euo pipefail
if command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1 \
  && compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null; then
  echo "install-mpi: Open MPI and libclang are installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-mpi: no apt-get here; install an MPI library with its mpicc (Open MPI or MPICH) and libclang with your package manager" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  openmpi-bin libopenmpi-dev libclang-dev pkg-config >/dev/null
echo "install-mpi: installed $(mpirun --version | head -1) and $(ls /usr/lib/llvm-*/lib/libclang.so* | head -1)"
