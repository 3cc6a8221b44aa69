//! `zephr-etl completions SHELL`: a completion script for bash, zsh or fish on stdout.
//!
//! clap_complete's bash script names the binary's `-` two ways: its dispatch sets
//! `cmd="zephr__etl__subcmd__convert"` while the case below is labelled
//! `zephr__subcmd__etl__subcmd__convert`, so nothing completed after a subcommand. The labels
//! are mended here to the name the dispatch uses.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, CompletionsArgs, ShellArg};

const BIN: &str = "zephr-etl";

/// The bash script with every case label spelled as its dispatch spells the binary's name.
fn mend_bash(script: &str) -> String {
    // The dispatch turns `-` into `__`; the labels into `__subcmd__`.
    let dispatch = BIN.replace('-', "__");
    let label = BIN.replace('-', "__subcmd__");
    script.replace(
        &format!("{label}__subcmd__"),
        &format!("{dispatch}__subcmd__"),
    )
}

pub fn run(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let shell = match args.shell {
        ShellArg::Bash => Shell::Bash,
        ShellArg::Zsh => Shell::Zsh,
        ShellArg::Fish => Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut script);
    if shell == Shell::Bash {
        script = mend_bash(&String::from_utf8_lossy(&script)).into_bytes();
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&script)?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_labels_match_the_dispatch() {
        let mut script = Vec::new();
        clap_complete::generate(Shell::Bash, &mut Cli::command(), BIN, &mut script);
        let script = mend_bash(&String::from_utf8(script).unwrap());
        assert!(!script.contains("zephr__subcmd__etl"), "{script}");
        assert!(script.contains("cmd=\"zephr__etl__subcmd__convert\""));
        assert!(
            script.contains("\n        zephr__etl__subcmd__convert)\n"),
            "{script}"
        );
    }
}
