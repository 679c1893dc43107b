//! sum: the sum of every argument read as an array of little-endian 64-bit integers (pass
//! arrays by reference, `ref:KEY`, so they are read from the cache next to the executor).

fn sum(args: Vec<Vec<u8>>) -> Result<Vec<u8>, String> {
    let total = args
        .iter()
        .flat_map(|a| a.chunks_exact(8))
        .map(|w| i64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
        .fold(0i64, i64::wrapping_add);
    Ok(total.to_string().into_bytes())
}

calm_guest::function!(sum);
