//! Shell completions (issue 14), loaded into the real shells: what each offers after a
//! command, and that zsh registers the function its `#compdef` line names.

use std::process::Command;

use crate::util::BIN;

fn script(shell: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let out = Command::new(BIN).args(["completions", shell]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let dir = tempfile::tempdir().unwrap();
    let name = match shell {
        "zsh" => "_aims-api",
        "fish" => "aims-api.fish",
        _ => "aims-api",
    };
    let path = dir.path().join(name);
    std::fs::write(&path, out.stdout).unwrap();
    (dir, path)
}

fn shell(program: &str, code: &str) -> String {
    let out = Command::new(program).args(["-c", code]).output().unwrap_or_else(|e| {
        panic!("{program} must be installed for this test (.ci/run installs it): {e}")
    });
    assert!(out.status.success(), "{program}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bash_completes_commands_actions_options_and_files() {
    let (dir, path) = script("bash");
    std::fs::write(dir.path().join("snap.json"), "{}").unwrap();
    let complete = |words: &str, cword: usize| {
        shell(
            "bash",
            &format!(
                "cd {:?} && source {:?} && COMP_WORDS=({words}) && COMP_CWORD={cword} && \
                 _aims_api && echo \"${{COMPREPLY[*]}}\"",
                dir.path(),
                path
            ),
        )
    };
    assert_eq!(
        complete("aims-api ''", 1),
        "serve key snapshot check-config diagnose completions -h --help -V --version\n"
    );
    assert_eq!(
        complete("aims-api key ''", 2),
        "status generate replace revoke clients check export-record install-record --expires-in \
         --grace -o --output --force -c --config --json -h --help -V --version\n"
    );
    assert_eq!(complete("aims-api key install-record sn", 3), "snap.json\n");
    assert_eq!(complete("aims-api diagnose --s", 2), "--strict\n");
    assert_eq!(complete("aims-api completions ''", 2), "bash zsh fish -h --help -V --version\n");
    assert_eq!(complete("aims-api snapshot import sn", 3), "snap.json\n");
    assert_eq!(complete("aims-api serve --config sn", 3), "snap.json\n");
}

#[test]
#[ignore = "needs fish, which .ci/run installs"]
fn fish_completes_commands_and_actions() {
    let (_dir, path) = script("fish");
    let complete = |line: &str| shell("fish", &format!("source {path:?}; complete -C {line:?}"));
    assert_eq!(
        complete("aims-api key "),
        "check\nclients\nexport-record\ngenerate\ninstall-record\nreplace\nrevoke\nstatus\n"
    );
    assert_eq!(
        complete("aims-api diag"),
        "diagnose\tcheck the configuration, state, certificate, server and system; say what to do\n"
    );
    assert_eq!(complete("aims-api diagnose --st"), "--strict\twarnings fail too\n");
}

#[test]
#[ignore = "needs zsh, which .ci/run installs"]
fn zsh_loads_the_script_and_registers_it_for_aims_api() {
    let (dir, _path) = script("zsh");
    let registered = shell(
        "zsh",
        &format!(
            "fpath=({:?} $fpath); autoload -U compinit; compinit -u -d {:?}; \
             print -r -- $_comps[aims-api]",
            dir.path(),
            dir.path().join("zcompdump")
        ),
    );
    assert_eq!(registered, "_aims-api\n");
    let out = Command::new("zsh").arg("-n").arg(dir.path().join("_aims-api")).output().unwrap();
    assert!(out.status.success(), "zsh -n: {out:?}");
}
