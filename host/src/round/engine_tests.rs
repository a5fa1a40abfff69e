//! The engine alone, driven by scripted events: no runtime, no sockets, no clock.

use super::*;
use crate::consensus::Outcome;
use crate::round::JudgeItem;
use std::collections::BTreeMap;

const T0: u64 = 1_000_000;

/// A scripted swarm: an entry key and `n` member keys, all expected to join.
struct Script {
    entry: Arc<NodeKey>,
    keys: Vec<NodeKey>,
}

impl Script {
    fn new(n: usize) -> Script {
        Script {
            entry: Arc::new(NodeKey::generate()),
            keys: (0..n).map(|_| NodeKey::generate()).collect(),
        }
    }

    fn id(&self, i: usize) -> String {
        self.keys[i].id()
    }

    fn round(&self, settings: Settings) -> Round {
        let spec = Spec {
            id: "r1".into(),
            request: crate::round::request("What is 17 + 25?", 7),
            deadlines: Deadlines::after(T0, &settings),
            settings,
            expected: (0..self.keys.len()).map(|i| self.id(i)).collect(),
            local: BTreeSet::new(),
            known: None,
        };
        Round::new(spec, self.entry.clone(), T0)
    }

    fn offer(&self, i: usize, score: f32) -> Offer {
        Offer {
            key: self.id(i),
            signer: self.id(i),
            plugin: format!("p{i}"),
            score,
            willing: score >= 0.5,
            standing: Standing::new(&Default::default()),
        }
    }

    fn answer(&self, i: usize, member: usize, text: &str) -> Signed<AnswerMsg> {
        self.keys[i].sign(AnswerMsg {
            round: "r1".into(),
            member,
            text: text.into(),
            ..Default::default()
        })
    }

    fn verdicts(&self, i: usize, task: &JudgeTask, pick: Outcome) -> Vec<Signed<VerdictMsg>> {
        self.verdicts_by(i, task, |_| pick)
    }

    /// Member `i`'s signed verdict on every item of `task`, as `judge` decides each.
    fn verdicts_by(
        &self,
        i: usize,
        task: &JudgeTask,
        judge: impl Fn(&JudgeItem) -> Outcome,
    ) -> Vec<Signed<VerdictMsg>> {
        task.items
            .iter()
            .map(|item| {
                self.keys[i].sign(VerdictMsg {
                    round: task.round.clone(),
                    judge: task.judge,
                    first: item.first,
                    second: item.second,
                    outcome: judge(item),
                })
            })
            .collect()
    }
}

/// A judge that prefers whichever shown answer is "42", and ties otherwise.
fn prefer_42(item: &JudgeItem) -> Outcome {
    if item.first_text == "42" {
        Outcome::First
    } else if item.second_text == "42" {
        Outcome::Second
    } else {
        Outcome::Tie
    }
}

/// Every action now queued.
fn drain(r: &mut Round) -> Vec<Action> {
    std::iter::from_fn(|| r.poll()).collect()
}

fn asked(actions: &[Action]) -> Vec<(usize, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Answer { member, key } => Some((*member, key.clone())),
            _ => None,
        })
        .collect()
}

fn tasks(actions: &[Action]) -> Vec<(String, JudgeTask)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Judge { key, task, .. } => Some((key.clone(), task.clone())),
            _ => None,
        })
        .collect()
}

fn decided(actions: Vec<Action>) -> Decision {
    actions
        .into_iter()
        .find_map(|a| match a {
            Action::Decided(d) => Some(*d),
            _ => None,
        })
        .expect("the round decided")
}

fn failed(actions: &[Action]) -> Option<Failure> {
    actions.iter().find_map(|a| match a {
        Action::Failed(f) => Some(f.clone()),
        _ => None,
    })
}

fn local_settings() -> Settings {
    Settings {
        calibrate: false,
        params: crate::ledger::local::local_params(),
        ..Settings::swarm()
    }
}

/// Three members join and answer `texts`; returns the round in its judging phase and
/// the judge tasks.
fn to_judging(
    s: &Script,
    settings: Settings,
    texts: [&str; 3],
) -> (Round, Vec<(String, JudgeTask)>) {
    let mut r = s.round(settings);
    for i in 0..3 {
        r.handle_join(T0 + 10, s.offer(i, 0.9)).unwrap();
    }
    let actions = drain(&mut r);
    let asks = asked(&actions);
    assert_eq!(asks.len(), 3);
    for (member, key) in asks {
        let i = (0..3).find(|&i| s.id(i) == key).unwrap();
        r.handle_answer(T0 + 20, &key, s.answer(i, member, texts[i]))
            .unwrap();
    }
    assert_eq!(r.phase(), Phase::Judging);
    let t = tasks(&drain(&mut r));
    (r, t)
}

fn index_of(s: &Script, key: &str) -> usize {
    (0..s.keys.len()).find(|&i| s.id(i) == key).unwrap()
}

#[test]
fn an_honest_round_decides_by_the_verdicts() {
    let s = Script::new(3);
    let (mut r, tasks) = to_judging(&s, local_settings(), ["42", "41", "40"]);
    assert_eq!(tasks.len(), 3, "every answerer judges");
    for (key, task) in &tasks {
        let i = index_of(&s, key);
        let verdicts = s.verdicts_by(i, task, prefer_42);
        r.handle_verdicts(T0 + 30, key, verdicts).unwrap();
    }
    let d = decided(drain(&mut r));
    assert_eq!(d.transcript.answers[d.winner].payload.text, "42");
    assert!(!d.undecided && !d.single_answer);
    assert!(
        d.transcript.verify().is_empty(),
        "{:?}",
        d.transcript.verify()
    );
    assert_eq!(r.phase(), Phase::Done);
}

#[test]
fn a_member_that_drops_before_answering_is_left_out() {
    let s = Script::new(4);
    let mut r = s.round(local_settings());
    for i in 0..4 {
        r.handle_join(T0, s.offer(i, 0.9)).unwrap();
    }
    let asks = asked(&drain(&mut r));
    let (gone, rest) = asks.split_first().unwrap();
    r.handle_failed(T0 + 5, &gone.1, "connection closed".into(), false)
        .unwrap();
    for (member, key) in rest {
        let text = format!("4{member}");
        r.handle_answer(T0 + 6, key, s.answer(index_of(&s, key), *member, &text))
            .unwrap();
    }
    // Its late answer is refused: it failed, so it was no longer awaited.
    let late = s.answer(index_of(&s, &gone.1), gone.0, "43");
    assert!(r.handle_answer(T0 + 7, &gone.1, late).is_err());
    let actions = drain(&mut r);
    assert_eq!(r.phase(), Phase::Judging);
    let t = tasks(&actions);
    assert!(
        t.iter().all(|(k, _)| k != &gone.1),
        "a dropped member is not asked to judge"
    );
    for (key, task) in &t {
        r.handle_verdicts(
            T0 + 8,
            key,
            s.verdicts(index_of(&s, key), task, Outcome::Tie),
        )
        .unwrap();
    }
    let d = decided(drain(&mut r));
    assert_eq!(d.transcript.answers.len(), 3);
    let dropped = d.members.iter().find(|m| m.key == gone.1).unwrap();
    assert!(!dropped.answered);
    assert_eq!(dropped.note.as_deref(), Some("connection closed"));
}

#[test]
fn an_answer_after_its_deadline_is_refused_and_the_phase_ends() {
    let s = Script::new(2);
    let settings = local_settings();
    let mut r = s.round(settings.clone());
    for i in 0..2 {
        r.handle_join(T0, s.offer(i, 0.9)).unwrap();
    }
    let asks = asked(&drain(&mut r));
    let answer_by = r.poll_timeout().unwrap();
    assert_eq!(answer_by, T0 + settings.join_ms + settings.answer_ms);
    let (m0, k0) = &asks[0];
    r.handle_answer(T0 + 1, k0, s.answer(index_of(&s, k0), *m0, "42"))
        .unwrap();
    let (m1, k1) = &asks[1];
    let late = s.answer(index_of(&s, k1), *m1, "41");
    assert_eq!(
        r.handle_answer(answer_by + 1, k1, late),
        Err(Refused::Late("answer"))
    );
    r.handle_timeout(answer_by);
    let d = decided(drain(&mut r));
    assert!(d.single_answer);
    assert_eq!(d.transcript.answers.len(), 1);
    let m = d.members.iter().find(|m| &m.key == k1).unwrap();
    assert_eq!(m.note.as_deref(), Some("late: no answer by the deadline"));
}

#[test]
fn a_verdict_for_a_pair_never_assigned_does_not_count() {
    let s = Script::new(3);
    let (mut r, tasks) = to_judging(&s, local_settings(), ["42", "41", "40"]);
    let (key, task) = &tasks[0];
    let i = index_of(&s, key);
    let mut verdicts = s.verdicts(i, task, Outcome::First);
    // Replace one with a pair nobody was given (an answer against itself).
    verdicts[0] = s.keys[i].sign(VerdictMsg {
        round: "r1".into(),
        judge: task.judge,
        first: 2,
        second: 2,
        outcome: Outcome::First,
    });
    let counted = r.handle_verdicts(T0 + 30, key, verdicts).unwrap();
    assert_eq!(counted, task.items.len() - 1);
    for (key, task) in &tasks[1..] {
        r.handle_verdicts(
            T0 + 30,
            key,
            s.verdicts(index_of(&s, key), task, Outcome::Tie),
        )
        .unwrap();
    }
    let d = decided(drain(&mut r));
    assert!(
        d.rejected
            .iter()
            .any(|(k, why)| k == key && why.contains("not given")),
        "{:?}",
        d.rejected
    );
    assert!(d.transcript.verify().is_empty());
}

#[test]
fn the_same_verdict_twice_counts_once_and_a_second_delivery_is_refused() {
    let s = Script::new(3);
    let (mut r, tasks) = to_judging(&s, local_settings(), ["42", "41", "40"]);
    let (key, task) = &tasks[0];
    let i = index_of(&s, key);
    let one = s.verdicts(i, task, Outcome::First)[0].clone();
    let counted = r
        .handle_verdicts(T0 + 30, key, vec![one.clone(), one.clone()])
        .unwrap();
    assert_eq!(counted, 1);
    assert!(matches!(
        r.handle_verdicts(T0 + 31, key, vec![one]),
        Err(Refused::Duplicate(_, _))
    ));
}

#[test]
fn fewer_than_two_answers_decide_without_judging() {
    let s = Script::new(3);
    let mut r = s.round(Settings::swarm());
    r.handle_join(T0, s.offer(0, 0.9)).unwrap();
    r.handle_join(T0, s.offer(1, 0.1)).unwrap();
    r.handle_join(T0, s.offer(2, 0.2)).unwrap();
    let asks = asked(&drain(&mut r));
    assert_eq!(asks.len(), 1, "only the willing member answers");
    let (m, k) = &asks[0];
    r.handle_answer(T0 + 1, k, s.answer(0, *m, "42")).unwrap();
    let actions = drain(&mut r);
    assert!(tasks(&actions).is_empty(), "nothing to compare");
    let d = decided(actions);
    assert!(d.single_answer && !d.undecided);
    assert_eq!(d.margin, 1.0);
}

#[test]
fn no_answer_at_all_fails_the_round_with_the_reasons() {
    let s = Script::new(2);
    let mut r = s.round(Settings::swarm());
    for i in 0..2 {
        r.handle_join(T0, s.offer(i, 0.9)).unwrap();
    }
    for (_, k) in asked(&drain(&mut r)) {
        r.handle_failed(T0 + 1, &k, format!("{} crashed", &k[..4]), true)
            .unwrap();
    }
    match failed(&drain(&mut r)) {
        Some(Failure::NoAnswers(why)) => assert!(why.contains("crashed"), "{why}"),
        other => panic!("expected no answers, got {other:?}"),
    }
}

#[test]
fn equal_answers_are_one_candidate_and_nobody_judges_copies() {
    let s = Script::new(3);
    let mut r = s.round(local_settings());
    for i in 0..3 {
        r.handle_join(T0 + 10, s.offer(i, 0.9)).unwrap();
    }
    let texts = ["42", "42.0", "The answer is 42."];
    for (member, key) in asked(&drain(&mut r)) {
        let i = index_of(&s, &key);
        r.handle_answer(T0 + 20, &key, s.answer(i, member, texts[i]))
            .unwrap();
    }
    // One candidate: there is no pair to judge, so the round is over.
    assert_eq!(r.phase(), Phase::Done);
    let d = decided(drain(&mut r));
    assert_eq!(d.decided_by, DecidedBy::Single);
    assert!(d.single_answer && !d.undecided);
    let result = &d.transcript.result.payload;
    assert_eq!(result.candidates, vec![Some(0); 3]);
    assert!(
        result.rewards.iter().all(|&p| p > 0.0),
        "every member of the winning candidate shares the reward: {:?}",
        result.rewards
    );
    assert!(d.transcript.verify().is_empty());
}

#[test]
fn judges_are_given_candidates_and_never_their_own() {
    let s = Script::new(4);
    let mut r = s.round(local_settings());
    for i in 0..4 {
        r.handle_join(T0 + 10, s.offer(i, 0.9)).unwrap();
    }
    // Two say 42 (in two spellings), one 41, one 40: three candidates.
    let texts = ["42", "41", "forty", "42.0"];
    let mut author = BTreeMap::new();
    for (member, key) in asked(&drain(&mut r)) {
        let i = index_of(&s, &key);
        author.insert(member, texts[i]);
        r.handle_answer(T0 + 20, &key, s.answer(i, member, texts[i]))
            .unwrap();
    }
    let tasks = tasks(&drain(&mut r));
    let mut shown = BTreeSet::new();
    for (_, task) in &tasks {
        let own = author[&task.judge];
        let own_value = if own.starts_with("42") { "42" } else { own };
        for item in &task.items {
            for text in [&item.first_text, &item.second_text] {
                shown.insert(text.clone());
                let value = if text.starts_with("42") {
                    "42"
                } else {
                    text.as_str()
                };
                assert_ne!(
                    value, own_value,
                    "judge {} shown its own candidate",
                    task.judge
                );
            }
        }
    }
    assert_eq!(
        shown.len(),
        3,
        "each candidate shown by one answer: {shown:?}"
    );
}

#[test]
fn with_no_calibrated_judge_the_verdicts_weigh_nothing() {
    let s = Script::new(3);
    // Swarm settings: new judges must first prove themselves on hidden items.
    let (mut r, tasks) = to_judging(&s, Settings::swarm(), ["42", "41", "40"]);
    for (key, task) in &tasks {
        assert!(
            task.items.len() > 2,
            "calibration items are hidden among the pairs"
        );
        // Ties on everything: abstaining calibrates nobody.
        r.handle_verdicts(
            T0 + 30,
            key,
            s.verdicts(index_of(&s, key), task, Outcome::Tie),
        )
        .unwrap();
    }
    let d = decided(drain(&mut r));
    assert!(d.undecided);
    assert_eq!(d.winner, 0);
    assert!(!d.transcript.calibration.is_empty());
    assert!(
        d.transcript.verify().is_empty(),
        "{:?}",
        d.transcript.verify()
    );
}

#[test]
fn every_deadline_passing_with_nothing_received() {
    let s = Script::new(3);
    let settings = Settings::swarm();
    // Nobody joins: the join deadline ends the round.
    let mut r = s.round(settings.clone());
    let join_by = r.poll_timeout().unwrap();
    r.handle_timeout(join_by - 1);
    assert_eq!(r.phase(), Phase::Joining, "not before its time");
    r.handle_timeout(join_by);
    assert_eq!(failed(&drain(&mut r)), Some(Failure::NoVolunteers));
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(r.handle_join(join_by, s.offer(0, 0.9)), Err(Refused::Over));

    // Joins, then no answers by the answer deadline.
    let mut r = s.round(settings.clone());
    for i in 0..3 {
        r.handle_join(T0, s.offer(i, 0.9)).unwrap();
    }
    drain(&mut r);
    r.handle_timeout(r.poll_timeout().unwrap());
    assert!(matches!(
        failed(&drain(&mut r)),
        Some(Failure::NoAnswers(_))
    ));

    // Answers, then no verdicts by the judge deadline: decided on the fallback order.
    let (mut r, tasks) = to_judging(&s, settings, ["42", "41", "40"]);
    assert!(!tasks.is_empty());
    r.handle_timeout(r.poll_timeout().unwrap());
    let d = decided(drain(&mut r));
    assert!(d.undecided);
    assert!(
        d.members
            .iter()
            .all(|m| m.note.as_deref() == Some("late: no verdicts by the deadline"))
    );
}

#[test]
fn out_of_phase_unknown_and_duplicate_events_are_refused() {
    let s = Script::new(3);
    let mut r = s.round(local_settings());
    let stranger = NodeKey::generate();
    let early = stranger.sign(AnswerMsg {
        round: "r1".into(),
        member: 0,
        text: "42".into(),
        ..Default::default()
    });
    assert!(matches!(
        r.handle_answer(T0, &stranger.id(), early),
        Err(Refused::OutOfPhase { .. })
    ));
    r.handle_join(T0, s.offer(0, 0.9)).unwrap();
    assert!(matches!(
        r.handle_join(T0, s.offer(0, 0.9)),
        Err(Refused::Duplicate(_, "joined"))
    ));
    // A join claiming to speak for another member.
    let mut forged = s.offer(1, 0.9);
    forged.signer = stranger.id();
    assert!(matches!(
        r.handle_join(T0, forged),
        Err(Refused::Invalid(_))
    ));
    let mut nan = s.offer(2, 0.9);
    nan.score = f32::NAN;
    assert!(matches!(r.handle_join(T0, nan), Err(Refused::Invalid(_))));
    // Members 1 and 2 spoke (badly), so the join phase is over.
    assert_eq!(r.phase(), Phase::Answering);
    let asks = asked(&drain(&mut r));
    assert_eq!(asks.len(), 1);
    let (m, k) = &asks[0];
    let stray = stranger.sign(AnswerMsg {
        round: "r1".into(),
        member: *m,
        text: "1".into(),
        ..Default::default()
    });
    assert_eq!(
        r.handle_answer(T0 + 1, &stranger.id(), stray.clone()),
        Err(Refused::Unknown(stranger.id()))
    );
    assert!(
        matches!(r.handle_answer(T0 + 1, k, stray), Err(Refused::Invalid(_))),
        "an answer signed by someone else"
    );
    let wrong_round = s.keys[0].sign(AnswerMsg {
        round: "r2".into(),
        member: *m,
        text: "42".into(),
        ..Default::default()
    });
    assert!(matches!(
        r.handle_answer(T0 + 1, k, wrong_round),
        Err(Refused::Invalid(_))
    ));
    assert!(matches!(
        r.handle_verdicts(T0 + 1, k, Vec::new()),
        Err(Refused::OutOfPhase { .. })
    ));
    r.handle_answer(T0 + 1, k, s.answer(0, *m, "42")).unwrap();
    assert!(matches!(
        r.handle_join(T0 + 2, s.offer(1, 0.9)),
        Err(Refused::Over)
    ));
}

#[test]
fn the_entry_nodes_own_member_is_waited_for_past_the_join_deadline() {
    let s = Script::new(2);
    let settings = Settings::swarm();
    let spec = Spec {
        id: "r1".into(),
        request: crate::round::request("q", 1),
        deadlines: Deadlines::after(T0, &settings),
        settings,
        expected: [s.id(0), s.id(1)].into(),
        local: [s.id(0)].into(),
        known: None,
    };
    let join_by = spec.deadlines.join_by;
    let mut r = Round::new(spec, s.entry.clone(), T0);
    r.handle_timeout(join_by + 5_000);
    assert_eq!(r.phase(), Phase::Joining);
    assert_eq!(
        r.poll_timeout(),
        None,
        "nothing to wake for but the local join"
    );
    assert_eq!(
        r.handle_join(join_by + 1, s.offer(1, 0.9)),
        Err(Refused::Late("join"))
    );
    r.handle_join(join_by + 6_000, s.offer(0, 0.9)).unwrap();
    assert_eq!(r.phase(), Phase::Answering);
}

#[test]
fn a_fault_after_anonymising_strikes_the_answer_and_the_verdicts() {
    let s = Script::new(3);
    let (mut r, tasks) = to_judging(&s, local_settings(), ["42", "41", "40"]);
    // The author of "42" faults while judging; the others prefer "42".
    let bad = s.id(0);
    r.handle_failed(T0 + 25, &bad, "trapped".into(), true)
        .unwrap();
    for (key, task) in tasks.iter().filter(|(k, _)| *k != bad) {
        let i = index_of(&s, key);
        let verdicts = s.verdicts_by(i, task, prefer_42);
        r.handle_verdicts(T0 + 30, key, verdicts).unwrap();
    }
    let d = decided(drain(&mut r));
    assert_eq!(d.transcript.struck.len(), 1);
    assert_ne!(
        d.transcript.answers[d.winner].payload.text, "42",
        "a struck answer never wins"
    );
    assert!(
        d.transcript.verify().is_empty(),
        "{:?}",
        d.transcript.verify()
    );
}

/// Thousands of random scripts: any event, in any phase, at any time, from members,
/// strangers and forgers. The engine never panics, ends in exactly one decision or
/// failure, and every decided transcript verifies.
#[test]
fn random_event_scripts_never_panic_and_decide_once() {
    use crate::consensus::pairs::SplitMix;
    let s = Script::new(5);
    let stranger = NodeKey::generate();
    let (mut decided_n, mut judged_n) = (0, 0);
    for seed in 0..1_500u64 {
        let mut rng = SplitMix(seed);
        let mut pick = |n: u64| (rng.next_u64() % n) as usize;
        let settings = if seed % 2 == 0 {
            Settings::swarm()
        } else {
            local_settings()
        };
        let mut r = s.round(settings);
        let mut now = T0;
        let mut seen_tasks: Vec<(String, JudgeTask)> = Vec::new();
        let mut seen_asks: Vec<(usize, String)> = Vec::new();
        let mut endings = 0;
        for _ in 0..60 {
            now += [0, 1, 1, 10, 10, 10, 500, 3_000, 70_000][pick(9)] as u64;
            let i = pick(5);
            let key = if pick(10) == 0 {
                stranger.id()
            } else {
                s.id(i)
            };
            let signer = if pick(8) == 0 { &stranger } else { &s.keys[i] };
            // Mostly the event the phase expects, sometimes anything.
            let kind = match (pick(5), r.phase()) {
                (0, _) | (_, Phase::Done) => pick(8),
                (_, Phase::Joining) => 0,
                (_, Phase::Answering) => 1,
                (_, Phase::Judging) => 2,
            };
            let _ = match kind {
                0 | 6 | 7 => r.handle_join(
                    now,
                    Offer {
                        key: key.clone(),
                        ..s.offer(i, [0.0, 0.4, 0.9, 1.0, f32::NAN][pick(5)])
                    },
                ),
                1 if !seen_asks.is_empty() && pick(4) != 0 => {
                    // Mostly the answer a member was asked for, sometimes a stray.
                    let (member, k) = seen_asks[pick(seen_asks.len() as u64)].clone();
                    let ii = index_of(&s, &k);
                    let member = if pick(8) == 0 { pick(6) } else { member };
                    let text = ["42", "41", "42 ", "40"][pick(4)];
                    r.handle_answer(now, &k, s.answer(ii, member, text))
                }
                1 => r.handle_answer(
                    now,
                    &key,
                    signer.sign(AnswerMsg {
                        round: if pick(6) == 0 {
                            "r2".into()
                        } else {
                            "r1".into()
                        },
                        member: pick(6),
                        text: ["42", "41", "42 ", ""][pick(4)].into(),
                        ..Default::default()
                    }),
                ),
                2 if !seen_tasks.is_empty() => {
                    let (k, t) = seen_tasks[pick(seen_tasks.len() as u64)].clone();
                    let ii = index_of(&s, &k);
                    let mut v = s.verdicts(
                        ii,
                        &t,
                        [Outcome::First, Outcome::Second, Outcome::Tie][pick(3)],
                    );
                    if pick(3) == 0 {
                        v.extend(v.clone());
                    }
                    if pick(4) == 0 && !v.is_empty() {
                        v[0].payload.first = 99;
                    }
                    r.handle_verdicts(now, &k, v).map(|_| ())
                }
                3 => r.handle_failed(now, &key, "gone".into(), pick(2) == 0),
                _ => {
                    r.handle_timeout(now);
                    Ok(())
                }
            };
            for a in drain(&mut r) {
                match a {
                    Action::Judge { key, task, .. } => seen_tasks.push((key, task)),
                    Action::Answer { member, key } => seen_asks.push((member, key)),
                    Action::Decided(d) => {
                        endings += 1;
                        decided_n += 1;
                        judged_n += usize::from(!d.transcript.verdicts.is_empty());
                        assert!(
                            d.transcript.verify().is_empty(),
                            "seed {seed}: {:?}",
                            d.transcript.verify()
                        );
                        assert!(d.winner < d.transcript.answers.len());
                    }
                    Action::Failed(_) => endings += 1,
                    _ => {}
                }
            }
        }
        // However the script ends, time running out ends the round.
        r.handle_timeout(u64::MAX);
        for a in drain(&mut r) {
            if matches!(a, Action::Decided(_) | Action::Failed(_)) {
                endings += 1;
            }
        }
        if r.phase() == Phase::Joining {
            // Only a local member can hold the joins open; this script has none.
            panic!("seed {seed}: still joining after every deadline");
        }
        assert_eq!(endings, 1, "seed {seed}: one decision or failure, exactly");
        assert_eq!(r.phase(), Phase::Done);
    }
    // The scripts reach every phase, not only early failures.
    eprintln!("{decided_n} decided, {judged_n} with verdicts");
    assert!(
        decided_n > 100 && judged_n > 20,
        "{decided_n} decided, {judged_n} judged"
    );
}
