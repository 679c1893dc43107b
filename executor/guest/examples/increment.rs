//! increment: x -> x + 1, for a decimal integer x.

fn increment(args: Vec<Vec<u8>>) -> Result<Vec<u8>, String> {
    let arg = args.first().ok_or("increment takes one argument")?;
    let x: i64 = calm_guest::text(arg)?
        .trim()
        .parse()
        .map_err(|_| "the argument is not an integer")?;
    Ok(x.wrapping_add(1).to_string().into_bytes())
}

calm_guest::function!(increment);
