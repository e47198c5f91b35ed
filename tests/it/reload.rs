//! Hot reload of the policy: a changed file is validated and swapped in
//! atomically; a bad file is reported and the last good policy stays.

use sharebroker::api::{AppState, Reload};
use sharebroker::config::Settings;
use sharebroker::policy::FieldDecision;

use crate::fixture::{prepare, repo};

#[tokio::test]
async fn policy_files_reload_atomically_and_bad_ones_are_refused() {
    let p = prepare();
    let policies = p.dir.path().join("policies");
    std::fs::create_dir_all(&policies).expect("dir");
    for f in std::fs::read_dir(repo("policies")).expect("policies") {
        let f = f.expect("entry").path();
        if f.is_file() {
            std::fs::copy(&f, policies.join(f.file_name().expect("name"))).expect("copy");
        }
    }
    let settings = Settings {
        policies_dir: policies.clone(),
        ..p.settings.clone()
    };
    let state = AppState::open(&settings).await.expect("state");
    let v1 = state.policy().version.clone();
    assert_eq!(state.reload_policy(false).await, Reload::Unchanged);
    let name_decision = |state: &AppState| {
        state
            .policy()
            .plan("xj-mzt:marriage_registry", "XJ-MZ-0201", "population")
            .and_then(|plan| plan.decision("name").cloned())
            .expect("a decision")
    };
    assert!(matches!(name_decision(&state), FieldDecision::Clear { .. }));

    // A steward withdraws the marriage registry's population rule.
    let rules = std::fs::read_to_string(policies.join("policy.csv")).expect("rules");
    let withdrawn = rules.replace(
        "p, xj-mzt:marriage_registry, dataset:population, read_clear, XJ-MZ-0201, allow\n",
        "",
    );
    assert_ne!(rules, withdrawn);
    std::fs::write(policies.join("policy.csv"), &withdrawn).expect("write");
    // A change is taken once the files read the same on two polls.
    assert_eq!(
        state.reload_policy(false).await,
        Reload::Unchanged,
        "first sight of a change waits"
    );
    let v2 = match state.reload_policy(false).await {
        Reload::Swapped(v) => v,
        other => panic!("expected a swap, got {other:?}"),
    };
    assert_ne!(v1, v2);
    assert!(matches!(
        name_decision(&state),
        FieldDecision::Denied { .. }
    ));

    // A bad file: reported with its line, and the last good policy stays.
    std::fs::write(
        policies.join("policy.csv"),
        format!("{withdrawn}p, xj-mzt:nobody, population.name, read_clear, XJ-MZ-0201, allow\n"),
    )
    .expect("write");
    assert_eq!(state.reload_policy(false).await, Reload::Unchanged);
    match state.reload_policy(false).await {
        Reload::Rejected(msg) => assert!(
            msg.contains("policy.csv:") && msg.contains("unknown role `xj-mzt:nobody`"),
            "{msg}"
        ),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(state.policy().version, v2);
    assert!(matches!(
        name_decision(&state),
        FieldDecision::Denied { .. }
    ));
    // Unchanged bad files are not reloaded again and again.
    assert_eq!(state.reload_policy(false).await, Reload::Unchanged);

    // Fixed: swapped in.
    std::fs::write(policies.join("policy.csv"), &rules).expect("write");
    assert_eq!(state.reload_policy(false).await, Reload::Unchanged);
    assert!(matches!(state.reload_policy(false).await, Reload::Swapped(v) if v == v1));
    assert!(matches!(name_decision(&state), FieldDecision::Clear { .. }));
}
