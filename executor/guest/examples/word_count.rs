//! word-count: counts the words of its argument and adds them to the running total kept
//! under the key `words` (read and written through the node's cache).

fn word_count(args: Vec<Vec<u8>>) -> Result<Vec<u8>, String> {
    let text = calm_guest::text(args.first().ok_or("word-count takes one argument")?)?;
    let words = text.split_whitespace().count() as u64;
    let before: u64 = calm_guest::get(b"words")
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let total = before + words;
    calm_guest::put(b"words", total.to_string().as_bytes());
    calm_guest::log(&format!("{words} words, {total} in all"));
    Ok(total.to_string().into_bytes())
}

calm_guest::function!(word_count);
