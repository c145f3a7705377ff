use serde_json::json;

use super::*;

// --- A tiny protobuf encoder for hand-built bodies. ---

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn key(tag: u32, wt: u8) -> Vec<u8> {
    varint((u64::from(tag) << 3) | u64::from(wt))
}

fn vint(tag: u32, v: u64) -> Vec<u8> {
    [key(tag, VARINT), varint(v)].concat()
}

fn len(tag: u32, b: &[u8]) -> Vec<u8> {
    [key(tag, LEN), varint(b.len() as u64), b.to_vec()].concat()
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let type_meta = [len(1, api_version.as_bytes()), len(2, kind.as_bytes())].concat();
    [MAGIC.to_vec(), len(1, &type_meta), len(2, raw)].concat()
}

static TEST: Message = Message {
    name: "test",
    fields: &[
        Field::one(1, "time", Kind::Time),
        Field::one(2, "micro", Kind::MicroTime),
        Field::one(3, "quantity", Kind::Quantity),
        Field::one(4, "intOrString", Kind::IntOrString),
        Field::one(5, "raw", Kind::RawExtension),
        Field::one(6, "fields", Kind::FieldsV1),
        Field::one(7, "duration", Kind::Duration),
        Field::one(8, "bytes", Kind::Bytes),
        Field::one(9, "int32", Kind::Int32),
        Field::many(10, "ints", Kind::Int64),
        Field::one(11, "double", Kind::Double),
        Field::one(12, "bool", Kind::Bool),
        Field::one(13, "map", Kind::Map(&Kind::Bytes)),
        Field::omit_zero(14, "omitted", Kind::String),
        Field::one(15, "kept", Kind::String),
        Field::one(16, "extra", Kind::Map(&Kind::StringList)),
    ],
};

fn decode_test(raw: &[u8]) -> Result<Value, ProtobufError> {
    let mut path = vec!["test".to_string()];
    decode_message(raw, &TEST, 0, &mut path).map(Value::Object)
}

#[test]
fn time_and_micro_time() {
    // 2026-01-01T00:00:00Z = 1767225600.
    let t = [vint(1, 1_767_225_600), vint(2, 123_456_789)].concat();
    let v = decode_test(&[len(1, &t), len(2, &t)].concat()).unwrap();
    assert_eq!(v["time"], "2026-01-01T00:00:00Z");
    assert_eq!(v["micro"], "2026-01-01T00:00:00.123456Z");
    // An empty message is the zero time, which JSON writes as null.
    let v = decode_test(&[len(1, &[]), len(2, &[])].concat()).unwrap();
    assert_eq!(v, json!({"time": null, "micro": null}));
    // A present seconds field of 0 is the Unix epoch.
    let v = decode_test(&len(1, &vint(1, 0))).unwrap();
    assert_eq!(v["time"], "1970-01-01T00:00:00Z");
    // Before 1970.
    let v = decode_test(&len(
        2,
        &[vint(1, (-1i64) as u64), vint(2, 500_000)].concat(),
    ))
    .unwrap();
    assert_eq!(v["micro"], "1969-12-31T23:59:59.000500Z");
}

#[test]
fn quantity_int_or_string_and_embedded_json() {
    let v = decode_test(
        &[
            len(3, &len(1, b"100m")),
            len(4, &[vint(1, 0), vint(2, 8080)].concat()),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(v, json!({"quantity": "100m", "intOrString": 8080}));
    let v = decode_test(&len(4, &[vint(1, 1), len(3, b"25%")].concat())).unwrap();
    assert_eq!(v["intOrString"], "25%");
    let v = decode_test(&len(3, &[])).unwrap();
    assert_eq!(v["quantity"], "0");
    let v = decode_test(
        &[
            len(5, &len(1, br#"{"a":[1,2]}"#)),
            len(6, &len(1, br#"{"f:metadata":{}}"#)),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(
        v,
        json!({"raw": {"a": [1, 2]}, "fields": {"f:metadata": {}}})
    );
    assert!(matches!(
        decode_test(&len(5, &len(1, b"{nope"))),
        Err(ProtobufError::InvalidJson { .. })
    ));
}

#[test]
fn raw_extension_holding_protobuf() {
    let inner = envelope("v1", "ConfigMap", &len(1, &len(1, b"c")));
    let v = decode_test(&len(5, &len(1, &inner))).unwrap();
    assert_eq!(
        v["raw"],
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    );
}

#[test]
fn durations_like_go() {
    for (ns, s) in [
        (0i64, "0s"),
        (60_000_000_000, "1m0s"),
        (3_600_000_000_000, "1h0m0s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (1_500_000, "1.5ms"),
        (1_500, "1.5µs"),
        (7, "7ns"),
        (-90_000_000_000, "-1m30s"),
    ] {
        assert_eq!(go_duration(ns), s);
    }
    let v = decode_test(&len(7, &vint(1, 600_000_000_000))).unwrap();
    assert_eq!(v["duration"], "10m0s");
}

#[test]
fn scalars_bytes_and_maps() {
    let minus_five = (-5i64) as u64;
    let packed: Vec<u8> = [varint(1), varint(300)].concat();
    let entry = [len(1, b"k"), len(2, &[0, 255])].concat();
    let extra = [
        len(1, b"groups"),
        len(2, &[len(1, b"a"), len(1, b"b")].concat()),
    ]
    .concat();
    let body = [
        len(8, b"v"),
        vint(9, minus_five),
        len(10, &packed),
        vint(10, 7),
        [key(11, FIXED64), 1.5f64.to_le_bytes().to_vec()].concat(),
        vint(12, 1),
        len(13, &entry),
        len(13, &len(1, b"empty")),
        len(14, b""),
        len(15, b""),
        len(16, &extra),
        // Unknown fields of every wire type are skipped.
        vint(99, 1),
        len(98, b"zzz"),
        [key(97, FIXED32), vec![0; 4]].concat(),
        [key(96, FIXED64), vec![0; 8]].concat(),
    ]
    .concat();
    assert_eq!(varint(minus_five).len(), 10);
    let v = decode_test(&body).unwrap();
    assert_eq!(
        v,
        json!({
            "bytes": "dg==",
            "int32": -5,
            "ints": [1, 300, 7],
            "double": 1.5,
            "bool": true,
            "map": {"k": "AP8=", "empty": ""},
            "kept": "",
            "extra": {"groups": ["a", "b"]},
        })
    );
}

#[test]
fn repeated_singular_message_is_merged() {
    let body = [len(1, &len(1, b"x")), len(1, &len(3, b"ns"))].concat();
    let v = decode(&envelope("v1", "Namespace", &body)).unwrap();
    assert_eq!(v["metadata"], json!({"name": "x", "namespace": "ns"}));
}

#[test]
fn omit_zero_drops_only_zero_values() {
    let v = decode_test(&len(14, b"x")).unwrap();
    assert_eq!(v, json!({"omitted": "x"}));
}

#[test]
fn delete_options_in_any_group_version() {
    let raw = [
        vint(1, 0),
        len(2, &len(1, b"uid-1")),
        len(4, b"Foreground"),
        len(5, b"All"),
    ]
    .concat();
    for api_version in ["v1", "apps/v1", "meta.k8s.io/v1"] {
        let v = decode(&envelope(api_version, "DeleteOptions", &raw)).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": api_version,
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": "uid-1"},
                "propagationPolicy": "Foreground",
                "dryRun": ["All"],
            })
        );
    }
}

#[test]
fn malformed_bodies_are_errors() {
    assert!(matches!(
        decode(b"{\"kind\":\"Pod\"}"),
        Err(ProtobufError::MissingMagic)
    ));
    assert!(matches!(
        decode(&envelope("v1", "Nope", &[])),
        Err(ProtobufError::UnknownKind { .. })
    ));
    assert!(matches!(
        decode(&envelope("", "", &[])),
        Err(ProtobufError::MissingTypeMeta)
    ));
    // Every truncation of a real body fails cleanly or decodes; none panics.
    let body = include_bytes!("testdata/deployment.pb");
    for n in 0..body.len() {
        let _ = decode(&body[..n]);
    }
    // A length running past the end.
    let mut bad = envelope("v1", "Namespace", &len(1, &len(1, b"x")));
    bad.truncate(bad.len() - 1);
    assert!(matches!(decode(&bad), Err(ProtobufError::Truncated(_))));
    // A string field sent as a varint.
    let err = decode(&envelope("v1", "Namespace", &len(1, &vint(1, 3)))).unwrap_err();
    assert!(
        matches!(err, ProtobufError::WireTypeMismatch { ref at, .. } if at == "Namespace.metadata.name"),
        "{err}"
    );
    // Invalid UTF-8.
    assert!(matches!(
        decode(&envelope("v1", "Namespace", &len(1, &len(1, &[0xff])))),
        Err(ProtobufError::InvalidUtf8(_))
    ));
    // An overlong varint.
    assert!(matches!(
        decode(&[MAGIC.to_vec(), vec![0x08], vec![0xff; 11]].concat()),
        Err(ProtobufError::BadVarint(_))
    ));
    // Deep nesting through RawExtension envelopes.
    let mut raw = envelope("v1", "ConfigMap", &[]);
    for _ in 0..100 {
        let rev = [len(1, &len(1, b"r")), len(2, &len(1, &raw))].concat();
        raw = envelope("apps/v1", "ControllerRevision", &rev);
    }
    assert!(matches!(decode(&raw), Err(ProtobufError::TooDeep)));
    // Content encodings are not supported.
    let mut enc = envelope("v1", "Namespace", &[]);
    enc.extend(len(3, b"gzip"));
    assert!(matches!(
        decode(&enc),
        Err(ProtobufError::UnsupportedContentEncoding(_))
    ));
}

#[test]
fn schema_is_consistent() {
    for w in schema::MESSAGES.windows(2) {
        assert!(w[0].name < w[1].name, "{} / {}", w[0].name, w[1].name);
    }
    for m in schema::MESSAGES {
        for w in m.fields.windows(2) {
            assert!(w[0].tag < w[1].tag, "{}: tags not sorted", m.name);
        }
        for f in m.fields {
            let mut kind = f.kind;
            if let Kind::Map(v) = kind {
                kind = *v;
            }
            if let Kind::Message(name) | Kind::Inline(name) = kind {
                assert!(message(name).is_some(), "{}.{}: {name}", m.name, f.json);
            }
        }
    }
    for (v, k, name) in schema::KINDS {
        assert!(message(name).is_some(), "{v} {k}: {name}");
    }
}

#[test]
fn every_served_resource_has_a_schema() {
    for def in crate::resources::RESOURCES {
        assert!(
            message_for_kind(&def.api_version(), def.kind).is_some(),
            "{} {}",
            def.api_version(),
            def.kind
        );
    }
    for sub in ["DeleteOptions", "Status"] {
        assert!(message_for_kind("v1", sub).is_some());
    }
    assert!(message_for_kind("autoscaling/v1", "Scale").is_some());
    assert!(message_for_kind("policy/v1", "Eviction").is_some());
    assert!(message_for_kind("v1", "Binding").is_some());
}

// --- Bodies kubectl 1.32 sent (`kubectl create ...`), against the JSON kubectl itself writes
// for the same object (`--dry-run=client -o json`). ---

macro_rules! golden {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("testdata/", $name, ".pb")).as_slice(),
            include_str!(concat!("testdata/", $name, ".json")),
        )
    };
}

#[test]
fn kubectl_bodies_decode_as_kubectl_json() {
    for (name, pb, expected) in [
        golden!("namespace"),
        golden!("configmap"),
        golden!("configmap-binary"),
        golden!("secret"),
        golden!("secret-dockerregistry"),
        golden!("deployment"),
        golden!("deployment-replicas0"),
        golden!("job"),
        golden!("cronjob"),
        golden!("service-clusterip"),
        golden!("service-nodeport"),
        golden!("service-externalname"),
        golden!("serviceaccount"),
        golden!("resourcequota"),
        golden!("poddisruptionbudget"),
        golden!("role"),
        golden!("rolebinding"),
        golden!("priorityclass"),
        golden!("ingress"),
        golden!("hpa-autoscaling-v1"),
    ] {
        let got = decode(pb).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected: Value = serde_json::from_str(expected).unwrap();
        assert_eq!(got, expected, "{name}: {got:#}");
    }
}

#[test]
fn kubectl_bodies_have_the_expected_fields() {
    let ns = decode(include_bytes!("testdata/namespace.pb")).unwrap();
    assert_eq!(
        serde_json::to_string(&ns).unwrap(),
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x","creationTimestamp":null},"spec":{},"status":{}}"#
    );

    let d = decode(include_bytes!("testdata/deployment.pb")).unwrap();
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["metadata"]["labels"], json!({"app": "d"}));
    assert_eq!(d["spec"]["selector"]["matchLabels"], json!({"app": "d"}));
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "i");
    assert_eq!(c["name"], "i");
    // Go non-pointer `omitempty` zero values (namespace "", generation 0, ...) are dropped.
    assert!(d["metadata"].get("namespace").is_none());
    assert!(d["metadata"].get("generation").is_none());
    assert!(c.get("imagePullPolicy").is_none());
    // A pointer field set to zero stays.
    let d0 = decode(include_bytes!("testdata/deployment-replicas0.pb")).unwrap();
    assert_eq!(d0["spec"]["replicas"], 0);
    assert_eq!(
        d0["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 8080}])
    );

    let s = decode(include_bytes!("testdata/secret.pb")).unwrap();
    assert_eq!(s["data"]["k"], "dg==");

    let svc = decode(include_bytes!("testdata/service-clusterip.pb")).unwrap();
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}])
    );

    let job = decode(include_bytes!("testdata/job.pb")).unwrap();
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");

    let pdb = decode(include_bytes!("testdata/poddisruptionbudget.pb")).unwrap();
    assert_eq!(pdb["spec"]["minAvailable"], "50%");

    // `kubectl drain` deletes pods (where eviction is not served) with a protobuf DeleteOptions.
    let opts = decode(include_bytes!("testdata/deleteoptions-drain.pb")).unwrap();
    assert_eq!(opts, json!({"apiVersion": "v1", "kind": "DeleteOptions"}));

    // `kubectl create token sa --duration=10m`: a TokenRequest to serviceaccounts/sa/token.
    let tr = decode(include_bytes!("testdata/tokenrequest.pb")).unwrap();
    assert_eq!(tr["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["spec"]["expirationSeconds"], 600);
}
