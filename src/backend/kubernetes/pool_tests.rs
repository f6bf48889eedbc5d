use std::collections::BTreeMap;
use std::time::Duration;

use pretty_assertions::assert_eq;
use proptest::prelude::*;
use serde_json::json;

use super::names;
use super::pool::*;
use super::*;
use crate::backend::SandboxSpec;
use crate::plan::sandbox_spec;
use crate::profile::{load, ProfileDirs};

const STATE_ID: &str = "5ea7e1d";
const WARM_FOR: Duration = Duration::from_secs(3600);

fn template() -> (SandboxSpec, RenderOptions) {
    let p = load("default", &ProfileDirs::default()).unwrap();
    let spec = sandbox_spec(&p, None, "template", STATE_ID, None);
    let opts = RenderOptions::new("stockade-sandboxes", p.timeout, p.kill_grace);
    (spec, opts)
}

#[test]
fn a_claim_patch_carries_the_listed_resource_version_and_the_claim_labels() {
    assert_eq!(
        claim_patch("4711", "c0ffee", None),
        json!({
            "metadata": {
                "resourceVersion": "4711",
                "labels": {
                    "stockade.dev/pool-state": "claimed",
                    "stockade.dev/claim": "c0ffee",
                },
            },
        })
    );
}

#[test]
fn a_claim_patch_lowers_the_deadline_when_asked() {
    assert_eq!(
        claim_patch("9", "c", Some(95)),
        json!({
            "metadata": {
                "resourceVersion": "9",
                "labels": {"stockade.dev/pool-state": "claimed", "stockade.dev/claim": "c"},
            },
            "spec": {"activeDeadlineSeconds": 95},
        })
    );
}

#[test]
fn an_unstarted_warm_pod_gets_the_one_shot_deadline() {
    assert_eq!(claimed_deadline(Some(3695), None, 1_000, 95), Some(95));
}

#[test]
fn a_started_warm_pod_keeps_the_time_it_ran_plus_the_one_shot_deadline() {
    assert_eq!(
        claimed_deadline(Some(3695), Some(800), 1_000, 95),
        Some(296)
    );
}

#[test]
fn a_deadline_is_never_raised() {
    // The API refuses a larger activeDeadlineSeconds: the patch leaves it out.
    assert_eq!(claimed_deadline(Some(100), Some(0), 1_000, 95), None);
    assert_eq!(claimed_deadline(Some(95), None, 1_000, 95), None);
}

#[test]
fn a_start_time_ahead_of_the_local_clock_counts_as_just_started() {
    assert_eq!(
        claimed_deadline(Some(3695), Some(2_000), 1_000, 95),
        Some(96)
    );
}

#[test]
fn the_claim_selector_names_owner_profile_state_and_spec_digest() {
    let (spec, _) = template();
    assert_eq!(
        pool_selector(&spec, Some(WARM)),
        format!(
            "app.kubernetes.io/managed-by=stockade,stockade.dev/owner={STATE_ID},\
             stockade.dev/profile=default,stockade.dev/pool-state=warm,stockade.dev/spec={}",
            spec.digest
        )
    );
    assert_eq!(
        pool_selector(&spec, None),
        format!(
            "app.kubernetes.io/managed-by=stockade,stockade.dev/owner={STATE_ID},\
             stockade.dev/profile=default,stockade.dev/pool-state"
        )
    );
}

#[test]
fn a_warm_pod_is_the_rendered_one_shot_with_pool_labels_and_a_longer_deadline() {
    let (spec, opts) = template();
    let (policy, pod) = warm_objects(&spec, &opts, WARM_FOR, "0123456789abcdef").unwrap();
    let mut one = spec.clone();
    one.name = "stockade-x-0123456789abcdef".into();
    one.kind = crate::backend::SandboxKind::Oneshot {
        exec: "0123456789abcdef".into(),
    };
    let mut longer = opts.clone();
    longer.lifetime += WARM_FOR;
    let rendered = render(&one, &longer).unwrap();
    assert_eq!(policy, rendered.network_policy);
    let mut want = rendered.pod;
    let labels = want.metadata.labels.as_mut().unwrap();
    labels.insert("stockade.dev/pool-state".into(), "warm".into());
    labels.insert("stockade.dev/spec".into(), spec.digest.clone());
    assert_eq!(pod, want);
    let warm = pod.spec.unwrap().active_deadline_seconds.unwrap();
    let oneshot = render(&one, &opts)
        .unwrap()
        .pod
        .spec
        .unwrap()
        .active_deadline_seconds
        .unwrap();
    assert_eq!(warm - oneshot, 3600);
}

#[test]
fn a_profile_name_that_is_no_label_value_is_refused_before_any_request() {
    let (mut spec, opts) = template();
    spec.profile = "my profile".into();
    let err = warm_objects(&spec, &opts, WARM_FOR, "0123456789abcdef").unwrap_err();
    assert!(
        matches!(&err, PoolError::Name(NameError::LabelValue { key, .. }) if key == LABEL_PROFILE),
        "{err}"
    );
    assert!(err.to_string().contains("\"my profile\""), "{err}");
}

#[test]
fn a_pool_id_that_makes_no_dns_label_is_refused() {
    let (spec, opts) = template();
    let err = warm_objects(&spec, &opts, WARM_FOR, &"a".repeat(60)).unwrap_err();
    assert!(
        matches!(
            &err,
            PoolError::Name(NameError::Name {
                what: "pod name",
                ..
            })
        ),
        "{err}"
    );
    let err = warm_objects(&spec, &opts, WARM_FOR, "Upper").unwrap_err();
    assert!(err.to_string().contains("lower-case"), "{err}");
}

#[test]
fn release_names_who_holds_a_pod() {
    let (spec, _) = template();
    let mut labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_OWNER.to_string(), STATE_ID.to_string()),
        (LABEL_PROFILE.to_string(), "default".to_string()),
        (LABEL_POOL_STATE.to_string(), WARM.to_string()),
    ]);
    assert_eq!(holder(&labels, &spec), "warm, not claimed");
    labels.insert(LABEL_POOL_STATE.into(), CLAIMED.into());
    labels.insert(LABEL_CLAIM.into(), "abc".into());
    assert_eq!(holder(&labels, &spec), "claim abc");
    labels.insert(LABEL_OWNER.into(), "other".into());
    assert_eq!(holder(&labels, &spec), "not a pod of this pool");
}

#[test]
fn dns_labels_follow_dns_1123() {
    for ok in [
        "a",
        "stockade",
        "stockade-x-0123456789abcdef",
        "0a",
        &"a".repeat(63),
    ] {
        names::dns_label("name", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (bad, why) in [
        ("", "empty"),
        (&"a".repeat(64) as &str, "longer than 63"),
        ("Stockade", "lower-case"),
        ("a_b", "lower-case"),
        ("a.b", "lower-case"),
        ("-a", "start and end"),
        ("a-", "start and end"),
        ("é", "lower-case"),
    ] {
        let err = names::dns_label("pod name", bad).unwrap_err().to_string();
        assert!(err.contains(why), "{bad:?}: {err}");
        assert!(err.starts_with("pod name "), "{err}");
    }
}

#[test]
fn label_values_follow_the_api_rules() {
    for ok in ["", "a", "A.b_c-9", "default", &"Z".repeat(63)] {
        names::label_value("k", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (bad, why) in [
        (&"a".repeat(64) as &str, "longer than 63"),
        ("a b", "only letters"),
        ("a/b", "only letters"),
        ("_a", "start and end"),
        ("a.", "start and end"),
    ] {
        let err = names::label_value("stockade.dev/claim", bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{bad:?}: {err}");
        assert!(err.starts_with("label stockade.dev/claim: "), "{err}");
    }
    assert!(names::nonempty_label_value("stockade.dev/claim", "").is_err());
}

#[test]
fn label_keys_follow_the_api_rules() {
    for ok in [
        LABEL_MANAGED_BY,
        LABEL_OWNER,
        LABEL_POOL_STATE,
        LABEL_CLAIM,
        LABEL_SPEC,
        "plain",
    ] {
        names::label_key(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "",
        "/a",
        "a/",
        "Stockade.dev/a",
        "stockade..dev/a",
        "a/b/c",
        &format!("x/{}", "a".repeat(64)),
    ] {
        assert!(names::label_key(bad).is_err(), "{bad:?}");
    }
}

proptest! {
    // The API's own expressions (apimachinery pkg/util/validation).
    #[test]
    fn dns_label_agrees_with_the_api_expression(s in "[a-zA-Z0-9._-]{0,70}") {
        let api = regex::Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap();
        prop_assert_eq!(names::dns_label("n", &s).is_ok(), api.is_match(&s) && s.len() <= 63);
    }

    #[test]
    fn label_value_agrees_with_the_api_expression(s in "[a-zA-Z0-9._ /-]{0,70}") {
        let api = regex::Regex::new("^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").unwrap();
        prop_assert_eq!(names::label_value("k", &s).is_ok(), api.is_match(&s) && s.len() <= 63);
    }
}
