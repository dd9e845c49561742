//! Phone numbers: WhatsApp ids and numbers typed into a CRM, normalised to E.164, with the
//! national variants that carriers, WhatsApp and CRMs disagree on (Brazil's mobile ninth digit,
//! Mexico's mobile `1`, Argentina's mobile `9`). Parsing is libphonenumber's, not patterns of
//! our own.

use phonenumber::{Mode, country};

/// E.164 form (`+5511987654321`) of a number as a person wrote it (spaces, dashes, brackets,
/// `+` or `00`); a number without a country code is read in `default_region` (ISO 3166 code,
/// e.g. `DE`) when one is given. `None` when it is not a phone number.
pub fn normalize(raw: &str, default_region: Option<&str>) -> Option<String> {
    let raw = raw.trim();
    let raw = raw
        .strip_prefix("00")
        .map(|rest| format!("+{rest}"))
        .unwrap_or_else(|| raw.to_string());
    let region = default_region.and_then(|r| r.trim().to_ascii_uppercase().parse::<country::Id>().ok());
    let number = phonenumber::parse(region, &raw).ok()?;
    let formatted = number.format().mode(Mode::E164).to_string();
    (formatted.len() > 4).then_some(formatted)
}

/// E.164 of a WhatsApp `wa_id` (digits, country code first, no `+`).
pub fn from_wa_id(wa_id: &str) -> Option<String> {
    let wa_id = wa_id.trim();
    if wa_id.is_empty() || !wa_id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // WhatsApp's ids are already international; libphonenumber only tidies them.
    Some(normalize(&format!("+{wa_id}"), None).unwrap_or_else(|| format!("+{wa_id}")))
}

/// The digits of a number, without `+` or formatting.
pub fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// Every E.164 form under which the same subscriber may be recorded: the number itself first,
/// then its known national variants.
pub fn variants(e164: &str) -> Vec<String> {
    let all = digits(e164);
    let mut out = vec![format!("+{all}")];
    let mut push = |d: String| {
        let v = format!("+{d}");
        if !out.contains(&v) {
            out.push(v);
        }
    };
    if let Some(rest) = all.strip_prefix("55") {
        // Brazil: mobile numbers gained a leading 9 after the two-digit area code; many
        // WhatsApp accounts still use the old eight-digit form.
        match rest.len() {
            10 if matches!(rest.as_bytes()[2], b'6'..=b'9') => {
                push(format!("55{}9{}", &rest[..2], &rest[2..]))
            }
            11 if rest.as_bytes()[2] == b'9' => push(format!("55{}{}", &rest[..2], &rest[3..])),
            _ => {}
        }
    } else if let Some(rest) = all.strip_prefix("52") {
        // Mexico: mobiles were dialled internationally as 52 1 …; WhatsApp uses either form.
        match (rest.len(), rest.strip_prefix('1')) {
            (11, Some(without)) => push(format!("52{without}")),
            (10, _) => push(format!("521{rest}")),
            _ => {}
        }
    } else if let Some(rest) = all.strip_prefix("54") {
        // Argentina: mobiles carry a 9 after the country code internationally.
        match (rest.len(), rest.strip_prefix('9')) {
            (11, Some(without)) => push(format!("54{without}")),
            (10, _) => push(format!("549{rest}")),
            _ => {}
        }
    }
    out
}

/// Whether two numbers (any formatting) are the same subscriber, allowing national variants.
pub fn same_subscriber(a: &str, b: &str, default_region: Option<&str>) -> bool {
    let (Some(a), Some(b)) = (
        normalize(a, default_region).or_else(|| from_wa_id(&digits(a))),
        normalize(b, default_region).or_else(|| from_wa_id(&digits(b))),
    ) else {
        return false;
    };
    variants(&a).contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_numbers_become_e164() {
        assert_eq!(
            normalize("+55 (11) 98765-4321", None).as_deref(),
            Some("+5511987654321")
        );
        assert_eq!(
            normalize("0049 151 1234 5678", None).as_deref(),
            Some("+4915112345678")
        );
        assert_eq!(
            normalize("0151 1234 5678", Some("de")).as_deref(),
            Some("+4915112345678")
        );
        assert_eq!(
            normalize("(415) 555-2671", Some("US")).as_deref(),
            Some("+14155552671")
        );
        assert_eq!(normalize("not a number", None), None);
        assert_eq!(
            normalize("0151 1234 5678", None),
            None,
            "national without a region is ambiguous"
        );
    }

    #[test]
    fn wa_ids_are_international_digits() {
        assert_eq!(from_wa_id("5511987654321").as_deref(), Some("+5511987654321"));
        assert_eq!(from_wa_id("+55").as_deref(), None);
        assert_eq!(from_wa_id("BR.123").as_deref(), None);
    }

    #[test]
    fn brazil_mexico_and_argentina_variants() {
        assert_eq!(variants("+551187654321"), ["+551187654321", "+5511987654321"]);
        assert_eq!(variants("+5511987654321"), ["+5511987654321", "+551187654321"]);
        assert_eq!(
            variants("+551132654321"),
            ["+551132654321"],
            "landlines keep eight digits"
        );
        assert_eq!(variants("+5215512345678"), ["+5215512345678", "+525512345678"]);
        assert_eq!(variants("+525512345678"), ["+525512345678", "+5215512345678"]);
        assert_eq!(variants("+5491123456789"), ["+5491123456789", "+541123456789"]);
        assert_eq!(variants("+4915112345678"), ["+4915112345678"]);
    }

    #[test]
    fn same_subscriber_across_formats_and_variants() {
        assert!(same_subscriber("551187654321", "+55 11 98765-4321", None));
        assert!(same_subscriber("+49 151 12345678", "004915112345678", None));
        assert!(!same_subscriber("+4915112345678", "+4915112345679", None));
        assert!(!same_subscriber("x", "+4915112345678", None));
    }
}
