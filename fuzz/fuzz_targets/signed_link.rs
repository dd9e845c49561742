//! Signed media and avatar links (`path`, `exp`, `sig` from the input's lines): only the
//! signature we made for that path and expiry is accepted, and only before it expires.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pipedrive_whatsapp::config::SecretKey;
use pipedrive_whatsapp::crypto::Keys;

const NOW: i64 = 1_763_800_000;

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        Keys::new(&SecretKey::parse("ZnV6ei1vbmx5LWtleS1mb3Itc2lnbmVkLWxpbmtzISE=").expect("32 bytes"))
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let (path, exp, sig) = (
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    );
    let Ok(exp) = exp.trim().parse::<i64>() else {
        return;
    };
    let keys = keys();
    let genuine = keys.sign_link(path, exp);
    let genuine = genuine.split("sig=").nth(1).expect("a signature");
    if keys.verify_link(path, exp, sig, NOW).is_ok() {
        assert_eq!(sig, genuine, "only our own signature is accepted");
    }
    assert_eq!(keys.verify_link(path, exp, genuine, NOW).is_ok(), NOW < exp);
});
