//! Formulas: parse, differentiate, print, evaluate; and the same bytes as a REPL line.
//! Nothing may panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use symdiff::{Expr, Session};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.len() > 2048 {
        return;
    }
    let _ = Session::new().run(text);
    let Ok(e) = Expr::parse(text) else { return };
    let vars = e.variables();
    let _ = e.to_string();
    let _ = e.to_latex();
    let point: Vec<(&str, f64)> = vars.iter().map(|v| (v.as_str(), 0.75)).collect();
    let _ = e.eval(&point);
    if let Some(v) = vars.first() {
        // Within the node budget, as every input route is.
        let Ok(d) = e.try_diff(v) else { return };
        let _ = d.to_string();
        let _ = d.eval(&point);
    }
});
