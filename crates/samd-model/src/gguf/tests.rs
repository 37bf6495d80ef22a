use super::*;
use crate::gguf_writer::GgufWriter;
use proptest::prelude::*;

/// Where the test script puts the real model (`scripts/fetch-model.sh`).
pub(crate) const REAL_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

fn small_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.metadata(keys::GENERAL_ARCHITECTURE, Value::String("llama".into()))
        .metadata("llama.block_count", Value::U32(2))
        .metadata("llama.embedding_length", Value::U64(64))
        .metadata("llama.rope.freq_base", Value::F32(10000.0))
        .metadata("some.i8", Value::I8(-3))
        .metadata("some.bool", Value::Bool(true))
        .metadata("some.f64", Value::F64(0.5))
        .metadata_str_array("tokenizer.ggml.tokens", &["a", "b", "ab"])
        .metadata(
            "nested",
            Value::Array {
                elem_type: ValueType::Array,
                items: vec![
                    Value::Array {
                        elem_type: ValueType::I16,
                        items: vec![Value::I16(1), Value::I16(-2)],
                    },
                    Value::Array {
                        elem_type: ValueType::String,
                        items: vec![],
                    },
                ],
            },
        );
    let data: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) / 7.0).collect();
    w.tensor_f32("norm.weight", &[8], &data[..8])
        .tensor_f16("f16", &[4, 2], &data[..8])
        .tensor_q8_0("q8", &[32, 2], &data)
        .tensor_q4_1("q41", &[64], &data);
    w
}

#[test]
fn gguf_round_trips_metadata_and_tensors() {
    let bytes = small_writer().to_bytes();
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 2);
    assert_eq!(f.get_u32("llama.embedding_length").unwrap(), 64);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(f.get_f32("some.f64").unwrap(), 0.5);
    assert_eq!(f.metadata("some.i8"), Some(&Value::I8(-3)));
    assert_eq!(f.metadata("some.bool"), Some(&Value::Bool(true)));
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap(),
        ["a", "b", "ab"]
    );
    let nested = f.get_array("nested").unwrap();
    assert_eq!(nested.len(), 2);
    assert_eq!(
        nested[0].as_array().unwrap(),
        [Value::I16(1), Value::I16(-2)]
    );
    assert_eq!(f.get_u32_opt("absent").unwrap(), None);
    assert_eq!(f.metadata_entries().count(), 9);

    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["norm.weight", "f16", "q8", "q41"]);
    let q8 = f.tensor("q8").unwrap();
    assert_eq!(
        (q8.dims.as_slice(), q8.dtype, q8.n_elements(), q8.n_bytes()),
        (&[32u64, 2][..], GgmlType::Q8_0, 64, 68)
    );
    for t in f.tensors() {
        assert_eq!(t.offset % 32, 0);
    }

    let data: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) / 7.0).collect();
    assert_eq!(f.tensor_f32("norm.weight").unwrap(), &data[..8]);
    let f16 = f.tensor_f32("f16").unwrap();
    for (a, b) in f16.iter().zip(&data) {
        assert!((a - b).abs() <= 2e-3, "{a} vs {b}");
    }
    // Q8_0: error at most half a step, d/2 = max|x| / 254 (plus f16 rounding of d).
    let q8 = f.tensor_f32("q8").unwrap();
    for (a, b) in q8.iter().zip(&data) {
        assert!((a - b).abs() <= 4.3 / 254.0 + 1e-2, "{a} vs {b}");
    }
    // Q4_1: error at most half a step, d/2 = range / 30 (plus f16 rounding).
    let q41 = f.tensor_f32("q41").unwrap();
    for (a, b) in q41.iter().zip(&data) {
        assert!((a - b).abs() <= 4.6 / 30.0 + 2e-2, "{a} vs {b}");
    }
    assert_eq!(f.tensor_bytes("q41").unwrap().len(), 40);
}

#[test]
fn gguf_reads_version_2_and_custom_alignment() {
    let mut w = small_writer();
    w.version(2).alignment(64);
    let bytes = w.to_bytes();
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!((f.version(), f.alignment()), (2, 64));
    assert_eq!(f.data_offset() % 64, 0);
    assert_eq!(f.tensor_f32("norm.weight").unwrap().len(), 8);
}

#[test]
fn gguf_typed_getters_name_the_key() {
    let bytes = small_writer().to_bytes();
    let f = GgufFile::parse(&bytes).unwrap();
    let e = f.get_u32("nope").unwrap_err();
    assert!(
        matches!(&e, Error::MissingKey { key } if key == "nope"),
        "{e}"
    );
    let e = f.get_u32("some.i8").unwrap_err();
    assert!(
        matches!(&e, Error::WrongType { key, .. } if key == "some.i8"),
        "{e}"
    );
    assert!(e.to_string().contains("i8 -3"), "{e}");
    let e = f.get_str("llama.block_count").unwrap_err();
    assert!(
        matches!(&e, Error::WrongType { key, .. } if key == "llama.block_count"),
        "{e}"
    );
    assert!(f.get_str_array("nested").is_err());
    assert!(f.get_f32(keys::GENERAL_ARCHITECTURE).is_err());
    let e = f.tensor("nope").unwrap_err();
    assert!(
        matches!(&e, Error::MissingTensor { name } if name == "nope"),
        "{e}"
    );
}

fn parse_err(bytes: &[u8]) -> Error {
    GgufFile::parse(bytes).expect_err("should be rejected")
}

#[test]
fn gguf_rejects_bad_magic_and_version() {
    let mut bytes = small_writer().to_bytes();
    bytes[0] = b'X';
    assert!(matches!(parse_err(&bytes), Error::BadMagic { .. }));
    assert!(matches!(parse_err(b"GG"), Error::BadMagic { .. }));
    for v in [0, 1, 4, u32::MAX] {
        let bytes = small_writer().version(v).to_bytes();
        assert!(matches!(parse_err(&bytes), Error::UnsupportedVersion { version } if version == v));
    }
}

#[test]
fn gguf_rejects_zero_and_non_power_of_two_alignment() {
    for a in [0, 3, 48] {
        let bytes = small_writer().alignment(a).to_bytes();
        let e = parse_err(&bytes);
        assert!(
            matches!(e, Error::BadAlignment { alignment } if alignment == u64::from(a)),
            "{e}"
        );
    }
}

#[test]
fn gguf_rejects_duplicates() {
    let mut w = small_writer();
    w.metadata("some.i8", Value::I8(1));
    assert!(matches!(parse_err(&w.to_bytes()), Error::DuplicateKey { key } if key == "some.i8"));
    let mut w = small_writer();
    w.tensor_f32("q8", &[1], &[0.0]);
    assert!(matches!(parse_err(&w.to_bytes()), Error::DuplicateTensor { name } if name == "q8"));
}

#[test]
fn gguf_rejects_bad_tensor_infos() {
    let mut w = GgufWriter::new();
    w.tensor_raw("t", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4]);
    assert!(matches!(
        parse_err(&w.to_bytes()),
        Error::TooManyDims { n_dims: 5, .. }
    ));

    let mut w = GgufWriter::new();
    w.tensor_raw("t", &[u64::MAX, 2], GgmlType::F32, vec![]);
    assert!(matches!(parse_err(&w.to_bytes()), Error::Overflow { .. }));

    // Element count fits but the byte size does not.
    let mut w = GgufWriter::new();
    w.tensor_raw("t", &[u64::MAX / 2], GgmlType::F32, vec![]);
    assert!(matches!(parse_err(&w.to_bytes()), Error::Overflow { .. }));

    let mut w = GgufWriter::new();
    w.tensor_raw("t", &[48], GgmlType::Q4_1, vec![0; 40]);
    let e = parse_err(&w.to_bytes());
    assert!(
        matches!(&e, Error::NotBlockMultiple { name, ne0: 48, block_size: 32, .. } if name == "t"),
        "{e}"
    );

    let mut w = GgufWriter::new();
    w.tensor_raw("t", &[16], GgmlType::F32, vec![0; 4]); // needs 64 bytes, has 4 + 28 padding
    let e = parse_err(&w.to_bytes());
    assert!(
        matches!(&e, Error::TensorOutOfBounds { name, .. } if name == "t"),
        "{e}"
    );

    let long = "x".repeat(64);
    let mut w = GgufWriter::new();
    w.tensor_raw(&long, &[1], GgmlType::F32, vec![0; 4]);
    assert!(matches!(
        parse_err(&w.to_bytes()),
        Error::TooLong { len: 64, .. }
    ));
}

/// Byte offset of the first tensor info's type field in a one-tensor file with no metadata.
fn single_tensor_file(name: &str) -> (Vec<u8>, usize) {
    let mut w = GgufWriter::new();
    w.tensor_f32(name, &[2], &[1.0, 2.0]);
    let type_at = 4 + 4 + 8 + 8 + 8 + name.len() + 4 + 8;
    (w.to_bytes(), type_at)
}

#[test]
fn gguf_rejects_unknown_type_ids_and_misaligned_offsets() {
    let (mut bytes, type_at) = single_tensor_file("t");
    bytes[type_at..type_at + 4].copy_from_slice(&5u32.to_le_bytes()); // Q4_2, removed
    assert!(matches!(
        parse_err(&bytes),
        Error::UnknownTensorType { type_id: 5, .. }
    ));
    bytes[type_at..type_at + 4].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(
        parse_err(&bytes),
        Error::UnknownTensorType { type_id: 1000, .. }
    ));

    let (mut bytes, type_at) = single_tensor_file("t");
    bytes[type_at + 4..type_at + 12].copy_from_slice(&8u64.to_le_bytes());
    assert!(matches!(
        parse_err(&bytes),
        Error::MisalignedTensor {
            offset: 8,
            alignment: 32,
            ..
        }
    ));
    bytes[type_at + 4..type_at + 12].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(parse_err(&bytes).to_string().contains("\"t\""));

    // Unknown metadata value type.
    let mut w = GgufWriter::new();
    w.metadata("k", Value::U8(0));
    let mut bytes = w.to_bytes();
    let ty = 24 + 8 + 1;
    bytes[ty..ty + 4].copy_from_slice(&13u32.to_le_bytes());
    assert!(matches!(
        parse_err(&bytes),
        Error::UnknownValueType {
            type_id: 13,
            offset: 33
        }
    ));
}

#[test]
fn gguf_rejects_counts_that_cannot_fit() {
    let mut bytes = small_writer().to_bytes();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        parse_err(&bytes),
        Error::CountTooLarge {
            what: "tensor info",
            ..
        }
    ));
    let mut bytes = small_writer().to_bytes();
    bytes[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(
        parse_err(&bytes),
        Error::CountTooLarge {
            what: "metadata",
            ..
        }
    ));

    // A huge array length and a huge string length, each the file's last entry.
    let mut w = GgufWriter::new();
    w.metadata(
        "k",
        Value::Array {
            elem_type: ValueType::U64,
            items: vec![Value::U64(1)],
        },
    );
    let mut bytes = w.to_bytes();
    let count_at = 24 + 8 + 1 + 4 + 4;
    bytes[count_at..count_at + 8].copy_from_slice(&(1u64 << 61).to_le_bytes());
    assert!(matches!(
        parse_err(&bytes),
        Error::CountTooLarge {
            what: "array element",
            ..
        }
    ));
    let mut bytes = w.to_bytes();
    bytes[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        parse_err(&bytes),
        Error::Truncated {
            what: "metadata key",
            ..
        }
    ));
}

/// Two u8 arrays that fit their bytes but together pass the element cap: 4 MB of file
/// would have become 134 MB of values, and a gigabyte of it 34 GB.
#[test]
fn gguf_rejects_more_array_elements_than_the_cap() {
    assert_eq!(
        std::mem::size_of::<Value>(),
        32,
        "the cap's doc assumes 32-byte values"
    );
    let half = MAX_ARRAY_ELEMENTS / 2 + 1;
    // Version 3, no tensors, two metadata entries.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&2u64.to_le_bytes());
    for key in ["a", "b"] {
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(key.as_bytes());
        bytes.extend_from_slice(&(ValueType::Array as u32).to_le_bytes());
        bytes.extend_from_slice(&(ValueType::U8 as u32).to_le_bytes());
        bytes.extend_from_slice(&(half as u64).to_le_bytes());
        bytes.resize(bytes.len() + half, 7);
    }
    assert!(matches!(
        parse_err(&bytes),
        Error::TooManyArrayElements {
            max: MAX_ARRAY_ELEMENTS,
            ..
        }
    ));
    // One of them alone parses.
    let one = bytes.len() - (8 + 1 + 4 + 4 + 8 + half);
    bytes[16..24].copy_from_slice(&1u64.to_le_bytes());
    GgufFile::parse(&bytes[..one]).expect("one array under the cap");
}

#[test]
fn gguf_rejects_deep_nesting_and_bad_utf8() {
    let mut v = Value::U8(1);
    for _ in 0..=MAX_VALUE_DEPTH {
        v = Value::Array {
            elem_type: v.value_type(),
            items: vec![v],
        };
    }
    let mut w = GgufWriter::new();
    w.metadata("deep", v);
    assert!(matches!(
        parse_err(&w.to_bytes()),
        Error::NestingTooDeep { .. }
    ));

    let mut w = GgufWriter::new();
    w.metadata("k", Value::String("ab".into()));
    let mut bytes = w.to_bytes();
    let at = bytes.windows(2).position(|w| w == b"ab").unwrap();
    bytes[at] = 0xff;
    assert!(matches!(
        parse_err(&bytes),
        Error::InvalidUtf8 {
            what: "string value",
            ..
        }
    ));
}

#[test]
fn gguf_unsupported_dequant_names_the_tensor_and_type() {
    let mut w = GgufWriter::new();
    w.tensor_raw("blk.0.ffn_down.weight", &[256], GgmlType::Q2_K, vec![0; 84]);
    let bytes = w.to_bytes();
    let f = GgufFile::parse(&bytes).unwrap();
    let e = f.tensor_f32("blk.0.ffn_down.weight").unwrap_err();
    assert!(matches!(
        e,
        Error::UnsupportedType {
            dtype: GgmlType::Q2_K,
            ..
        }
    ));
    let msg = e.to_string();
    assert!(
        msg.contains("blk.0.ffn_down.weight") && msg.contains("Q2_K"),
        "{msg}"
    );
}

#[test]
fn gguf_every_truncation_is_an_error() {
    let bytes = small_writer().to_bytes();
    let f = GgufFile::parse(&bytes).unwrap();
    // The file may end with padding after the last tensor; every shorter prefix must fail.
    let end = f
        .tensors()
        .iter()
        .map(|t| f.data_offset() + t.offset + t.n_bytes())
        .max()
        .unwrap();
    for len in 0..end as usize {
        assert!(
            GgufFile::parse(&bytes[..len]).is_err(),
            "prefix of {len} bytes parsed"
        );
    }
}

/// Parses, then reads every tensor, dequantised and in blocks, as the fuzz target does:
/// nothing may panic.
fn parse_and_dequantise(bytes: &[u8]) {
    if let Ok(f) = GgufFile::parse(bytes) {
        let _ = f.architecture();
        for t in f.tensors() {
            let _ = f.tensor_f32(&t.name);
            let _ = crate::block_rows::BlockRows::of_tensor(&f, t);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn gguf_bit_flips_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4)) {
        let mut bytes = small_writer().to_bytes();
        for (at, bit) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        parse_and_dequantise(&bytes);
    }

    #[test]
    fn gguf_random_bytes_after_the_magic_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = b"GGUF\x03\0\0\0".to_vec();
        bytes.extend(tail);
        parse_and_dequantise(&bytes);
    }
}

#[test]
fn gguf_real_model_smollm2() {
    let Ok(bytes) = std::fs::read(REAL_MODEL) else {
        eprintln!("skipping: {REAL_MODEL} is absent (run scripts/fetch-model.sh)");
        return;
    };
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(f.get_u32("llama.feed_forward_length").unwrap(), 1536);
    assert_eq!(f.get_u32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(f.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(f.get_str(keys::TOKENIZER_MODEL).unwrap(), "gpt2");
    assert_eq!(
        f.get_str_array(keys::TOKENIZER_TOKENS).unwrap().len(),
        49152
    );

    // token_embd, output_norm, and 9 tensors per layer; the output matrix is tied.
    assert_eq!(f.tensors().len(), 2 + 9 * 30);
    assert!(f.tensor("output.weight").is_err());
    let embd = f.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (embd.dtype, embd.dims.as_slice()),
        (GgmlType::Q8_0, &[576u64, 49152][..])
    );
    assert_eq!(f.tensor("output_norm.weight").unwrap().dtype, GgmlType::F32);
    for l in 0..30 {
        for (suffix, dims) in [
            ("attn_q", [576, 576]),
            ("attn_k", [576, 192]),
            ("attn_v", [576, 192]),
            ("attn_output", [576, 576]),
            ("ffn_gate", [576, 1536]),
            ("ffn_up", [576, 1536]),
            ("ffn_down", [1536, 576]),
        ] {
            let t = f.tensor(&format!("blk.{l}.{suffix}.weight")).unwrap();
            assert_eq!(
                (t.dtype, t.dims.as_slice()),
                (GgmlType::Q4_1, &dims[..]),
                "{}",
                t.name
            );
        }
        for norm in ["attn_norm", "ffn_norm"] {
            let t = f.tensor(&format!("blk.{l}.{norm}.weight")).unwrap();
            assert_eq!((t.dtype, t.dims.as_slice()), (GgmlType::F32, &[576u64][..]));
        }
    }
    for name in [
        "token_embd.weight",
        "blk.0.attn_q.weight",
        "blk.29.ffn_down.weight",
        "output_norm.weight",
    ] {
        let v = f.tensor_f32(name).unwrap();
        assert_eq!(v.len() as u64, f.tensor(name).unwrap().n_elements());
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
        assert!(v.iter().any(|&x| x != 0.0), "{name}");
    }
}
