//! Sizes as people write them on a command line: `4096`, `500M`, `2G`, `1TiB`.

/// Parses a number of bytes with an optional binary unit: `K`, `M`, `G` or `T` (also
/// `KiB`, ... and `B`), in any case. Returns why not otherwise. Zero is allowed; callers
/// that need more say so.
pub fn parse_size(text: &str) -> Result<u64, &'static str> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    let number: u64 = number.parse().map_err(|_| "the size is not a number")?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KIB" => 10,
        "M" | "MIB" => 20,
        "G" | "GIB" => 30,
        "T" | "TIB" => 40,
        _ => return Err("unknown size unit"),
    };
    number
        .checked_mul(1 << shift)
        .ok_or("the size is too large")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size(" 2gib "), Ok(2 << 30));
        assert_eq!(parse_size("7B"), Ok(7));
        assert_eq!(parse_size("G"), Err("the size is not a number"));
        assert_eq!(parse_size("5X"), Err("unknown size unit"));
        assert_eq!(parse_size("99999999999T"), Err("the size is too large"));
    }
}
