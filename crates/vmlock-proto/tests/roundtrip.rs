//! Property tests: encode→decode is the identity for every wire type, and decoding
//! arbitrary bytes never panics and never allocates more than the input holds.

use proptest::collection::vec;
use proptest::prelude::*;

use vmlock_proto::admin::{self, TypedParam, TypedValue};
use vmlock_proto::error::{DomainRef, NetworkRef, WireError};
use vmlock_proto::frame::{encode_frame, parse_body};
use vmlock_proto::header::{Header, MessageType, Status};
use vmlock_proto::lock::{
    self, Call, CreateLockspaceArgs, NewArgs, Owner, Procedure, RegisterArgs, ResourceArgs,
    RestrictArgs,
};
use vmlock_proto::xdr::{DecodeError, Decoder, Encoder, XdrDecode, XdrEncode};

fn text() -> impl Strategy<Value = String> {
    // Mixes ASCII, multi-byte UTF-8 and lengths that hit every padding case.
    "[a-z/._ 0-9\u{e9}\u{4e2d}\u{1f512}]{0,24}"
}

fn owner() -> impl Strategy<Value = Owner> {
    (any::<[u8; 16]>(), text(), any::<u32>(), any::<u32>()).prop_map(|(uuid, name, id, pid)| {
        Owner {
            uuid,
            name,
            id,
            pid,
        }
    })
}

fn resource() -> impl Strategy<Value = ResourceArgs> {
    (text(), text(), any::<u32>()).prop_map(|(path, name, flags)| ResourceArgs {
        path,
        name,
        flags,
    })
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        (owner(), any::<u32>())
            .prop_map(|(owner, flags)| Call::Register(RegisterArgs { owner, flags })),
        any::<u32>().prop_map(|flags| Call::Restrict(RestrictArgs { flags })),
        (text(), any::<u32>()).prop_map(|(path, flags)| Call::New(NewArgs { path, flags })),
        resource().prop_map(Call::CreateResource),
        resource().prop_map(Call::DeleteResource),
        resource().prop_map(Call::AcquireResource),
        resource().prop_map(Call::ReleaseResource),
        text().prop_map(|path| Call::CreateLockspace(CreateLockspaceArgs { path })),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<i32>(),
        any::<i32>(),
        any::<u32>(),
        any::<i32>(),
    )
        .prop_map(|(prog, vers, proc_, t, serial, s)| Header {
            prog,
            vers,
            proc_,
            mtype: MessageType::from_i32(t),
            serial,
            status: Status::from_i32(s),
        })
}

fn wire_error() -> impl Strategy<Value = WireError> {
    let dom = proptest::option::of((text(), any::<[u8; 16]>(), any::<i32>()))
        .prop_map(|o| o.map(|(name, uuid, id)| DomainRef { name, uuid, id }));
    let net = proptest::option::of((text(), any::<[u8; 16]>()))
        .prop_map(|o| o.map(|(name, uuid)| NetworkRef { name, uuid }));
    let strs = vec(proptest::option::of(text()), 4);
    (any::<[i32; 5]>(), strs, dom, net).prop_map(|(ints, strs, dom, net)| {
        let [message, str1, str2, str3]: [Option<String>; 4] =
            strs.try_into().unwrap_or_else(|_| unreachable!());
        WireError {
            code: ints[0],
            domain: ints[1],
            message,
            level: ints[2],
            dom,
            str1,
            str2,
            str3,
            int1: ints[3],
            int2: ints[4],
            net,
        }
    })
}

fn typed_param() -> impl Strategy<Value = TypedParam> {
    let value = prop_oneof![
        any::<i32>().prop_map(TypedValue::Int),
        any::<u32>().prop_map(TypedValue::UInt),
        any::<i64>().prop_map(TypedValue::LLong),
        any::<u64>().prop_map(TypedValue::ULLong),
        proptest::num::f64::NORMAL.prop_map(TypedValue::Double),
        any::<i32>().prop_map(TypedValue::Boolean),
        text().prop_map(TypedValue::String),
    ];
    (text(), value).prop_map(|(field, value)| TypedParam { field, value })
}

proptest! {
    #[test]
    fn call_round_trips(c in call()) {
        let bytes = c.to_xdr();
        prop_assert_eq!(bytes.len() % 4, 0);
        prop_assert_eq!(lock::decode_call(c.procedure(), &bytes), Ok(c));
    }

    #[test]
    fn args_structs_round_trip(o in owner(), r in resource(), f in any::<u32>()) {
        let reg = RegisterArgs { owner: o.clone(), flags: f };
        prop_assert_eq!(RegisterArgs::from_xdr(&reg.to_xdr()), Ok(reg));
        prop_assert_eq!(Owner::from_xdr(&o.to_xdr()), Ok(o));
        prop_assert_eq!(ResourceArgs::from_xdr(&r.to_xdr()), Ok(r.clone()));
        let new = NewArgs { path: r.path.clone(), flags: f };
        prop_assert_eq!(NewArgs::from_xdr(&new.to_xdr()), Ok(new));
        let cl = CreateLockspaceArgs { path: r.name };
        prop_assert_eq!(CreateLockspaceArgs::from_xdr(&cl.to_xdr()), Ok(cl));
        prop_assert_eq!(RestrictArgs::from_xdr(&RestrictArgs { flags: f }.to_xdr()), Ok(RestrictArgs { flags: f }));
    }

    #[test]
    fn header_round_trips(h in header(), payload in vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(Header::decode(&h.to_bytes()), Ok(h));
        let mut body = payload.clone();
        if h.mtype.has_fds() {
            body.splice(0..0, [0, 0, 0, 3]);
        }
        let frame = encode_frame(&h, &body);
        prop_assert_eq!(frame.len(), 28 + body.len());
        let m = parse_body(&frame[4..]).expect("frame parses");
        prop_assert_eq!(m.header, h);
        prop_assert_eq!(m.payload, payload);
    }

    #[test]
    fn wire_error_round_trips(e in wire_error()) {
        prop_assert_eq!(WireError::from_xdr(&e.to_xdr()), Ok(e));
    }

    #[test]
    fn typed_params_round_trip(params in vec(typed_param(), 0..6)) {
        let mut e = Encoder::new();
        admin::encode_params(&params, &mut e);
        let mut d = Decoder::new(e.as_slice());
        prop_assert_eq!(admin::decode_params(&mut d, 64), Ok(params));
        prop_assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..256)) {
        vmlock_proto::fuzz_entry_decode_frame(&data);
        vmlock_proto::fuzz_entry_decode_args(&data);
        for p in Procedure::ALL {
            let _ = lock::decode_call(p, &data);
        }
        let mut d = Decoder::new(&data);
        let _ = WireError::decode(&mut d);
        prop_assert!(d.allocated() <= data.len());
        let mut d = Decoder::new(&data);
        let _ = admin::decode_params(&mut d, usize::MAX);
        prop_assert!(d.allocated() <= d.position());
    }

    #[test]
    fn claimed_length_beyond_input_fails_before_allocating(
        claim in 5u32..,
        tail in vec(any::<u8>(), 0..4),
    ) {
        // A string whose length word promises more than the input holds.
        let mut data = claim.to_be_bytes().to_vec();
        data.extend(&tail);
        let mut d = Decoder::new(&data);
        prop_assert_eq!(d.string(usize::MAX), Err(DecodeError::Truncated));
        prop_assert_eq!(d.allocated(), 0);
        let mut d = Decoder::new(&data);
        prop_assert!(admin::decode_params(&mut d, usize::MAX).is_err());
        prop_assert_eq!(d.allocated(), 0);
    }

    #[test]
    fn valid_calls_decode_with_bounded_allocation(c in call()) {
        let bytes = c.to_xdr();
        let mut d = Decoder::new(&bytes);
        match c.procedure() {
            Procedure::Register => { RegisterArgs::decode(&mut d).expect("decodes"); }
            Procedure::Restrict => { RestrictArgs::decode(&mut d).expect("decodes"); }
            Procedure::New => { NewArgs::decode(&mut d).expect("decodes"); }
            Procedure::CreateLockspace => { CreateLockspaceArgs::decode(&mut d).expect("decodes"); }
            _ => { ResourceArgs::decode(&mut d).expect("decodes"); }
        }
        prop_assert!(d.allocated() <= bytes.len());
        prop_assert_eq!(d.finish(), Ok(()));
    }
}
