fn main() {
    let mut s = symdiff::Session::new();
    for line in std::io::stdin().lines() {
        let line = line.unwrap();
        match s.run(&line) {
            Ok(out) => println!("{line:40} => {out}"),
            Err(symdiff::Error::Parse(d)) => println!("{line:40} !! {}", d.render()),
            Err(e) => println!("{line:40} !! {e}"),
        }
    }
}
