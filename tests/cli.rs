//! End-to-end tests of the `calm` binary: exit codes, output formats, error messages.

use std::process::Command;

fn calm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_calm"))
        .args(args)
        .output()
        .expect("running the calm binary")
}

#[test]
fn demo_converges_and_replays_from_its_seed() {
    let first = calm(&[
        "demo", "--seed", "11", "--edits", "300", "--drop", "0.4", "--json",
    ]);
    assert!(
        first.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    let out = String::from_utf8(first.stdout).expect("utf-8 output");
    assert_eq!(out.lines().count(), 1, "--json prints one document: {out}");
    assert!(out.contains("\"converged\":true"), "{out}");
    assert!(out.contains("\"seed\":11"), "{out}");
    let second = calm(&[
        "demo", "--seed", "11", "--edits", "300", "--drop", "0.4", "--json",
    ]);
    assert_eq!(out, String::from_utf8(second.stdout).expect("utf-8 output"));
}

#[test]
fn demo_text_output_names_the_seed_and_the_result() {
    let run = calm(&["demo", "--seed", "3", "--replicas", "5"]);
    assert!(run.status.success());
    let out = String::from_utf8(run.stdout).expect("utf-8 output");
    assert!(out.contains("5 replicas"), "{out}");
    assert!(out.contains("seed 3"), "{out}");
    assert!(out.contains("converged: yes"), "{out}");
}

#[test]
fn bad_arguments_exit_1_with_one_clear_line() {
    let run = calm(&["demo", "--drop", "1"]);
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8(run.stderr).expect("utf-8 output");
    assert!(err.contains("can never converge"), "{err}");

    let run = calm(&["demo", "--duplicate", "often"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("not a number"));

    let run = calm(&["no-such-command"]);
    assert_eq!(run.status.code(), Some(1));
}

#[test]
fn help_exits_0_and_describes_the_demo() {
    let run = calm(&["demo", "--help"]);
    assert_eq!(run.status.code(), Some(0));
    let out = String::from_utf8(run.stdout).expect("utf-8 output");
    assert!(out.contains("--seed"), "{out}");
    assert!(out.contains("lossy network"), "{out}");
}
