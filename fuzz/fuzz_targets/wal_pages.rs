//! The page checker on arbitrary WAL, cut into arbitrary chunks: never a panic, and the
//! verdict does not depend on where the chunks were cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgreceivewal::lsn::Lsn;
use pgreceivewal::physical::walcheck::PageVerifier;

const SEG: u64 = 1 << 20;
const BLCK: u32 = 8192;

fuzz_target!(|input: (u16, u8, &[u8])| {
    let (start_page, cut, data) = input;
    // Start somewhere in the first segments, at a page or mid-page.
    let start = u64::from(start_page) * 97 % (4 * SEG);
    let whole = PageVerifier::new(1, SEG, BLCK).check(Lsn(start), data).is_ok();
    let step = usize::from(cut).max(1);
    let mut v = PageVerifier::new(1, SEG, BLCK);
    let mut ok = true;
    for (i, chunk) in data.chunks(step).enumerate() {
        if v.check(Lsn(start + (i * step) as u64), chunk).is_err() {
            ok = false;
            break;
        }
    }
    assert_eq!(whole, ok, "the verdict must not depend on chunking");
});
