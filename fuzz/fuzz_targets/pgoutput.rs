//! pgoutput messages of every protocol version, inside and outside streamed blocks: any bytes
//! give a message or an error, never a panic, and a parsed message encodes back to bytes that
//! parse to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgreceivewal::logical::pgoutput::{encode, parse, Context};

fuzz_target!(|input: (u8, bool, bool, &[u8])| {
    let (version, in_stream, abort_info, data) = input;
    let mut ctx = Context::new(u32::from(version % 4) + 1);
    ctx.in_stream = in_stream;
    ctx.abort_info = abort_info;
    if let Ok(msg) = parse(data, &ctx) {
        let again = encode(&msg);
        let reparsed = parse(&again, &ctx).expect("an encoded message parses");
        assert_eq!(format!("{msg:?}"), format!("{reparsed:?}"));
    }
});
