//! `drover token new`: a new random token and its entry for the coordinator's `--auth-file`.

use clap::{Args, Subcommand};
use drover_coordinator::auth::{AuthFile, Scope, new_token, valid_namespace};

use crate::error::CliError;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a new token and the auth-file entry that admits it (the file holds only its
    /// SHA-256; the token is shown once).
    New(NewArgs),
}

#[derive(Args, Debug)]
pub struct NewArgs {
    /// The token's name, as logs and audit lines show it.
    #[arg(long)]
    pub name: String,
    /// What it may do: read, write, agent, admin (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub scopes: Vec<String>,
    /// An agent token may connect only as these launch templates.
    #[arg(long, value_delimiter = ',')]
    pub launch_templates: Vec<String>,
    /// Runs started with this token write the cache into this namespace (e.g. `pr` for
    /// pull-request pipelines); default runs never read it.
    #[arg(long)]
    pub cache_namespace: Option<String>,
}

pub fn run(cmd: TokenCommand) -> Result<u8, CliError> {
    let TokenCommand::New(args) = cmd;
    let mut scopes = Vec::new();
    for s in &args.scopes {
        let scope = Scope::parse(s.trim()).ok_or_else(|| {
            CliError::Usage(format!(
                "--scopes: `{s}` is not a scope (read, write, agent, admin)"
            ))
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if args.name.trim().is_empty() {
        return Err(CliError::Usage("--name is empty".into()));
    }
    if let Some(ns) = &args.cache_namespace
        && !valid_namespace(ns)
    {
        return Err(CliError::Usage(format!(
            "--cache-namespace `{ns}`: letters, digits, `-` or `_`, at most 64"
        )));
    }
    let templates = (!args.launch_templates.is_empty()).then_some(args.launch_templates);
    if templates.is_some() && !scopes.contains(&Scope::Agent) {
        return Err(CliError::Usage(
            "--launch-templates limits an agent token: add `agent` to --scopes".into(),
        ));
    }
    let (token, entry) =
        new_token(&args.name, scopes, templates, args.cache_namespace).map_err(CliError::Io)?;
    out!("# the token: give it to the client (--token or DROVER_TOKEN); it is shown only now");
    out!("{token}");
    out!("# its entry for the coordinator's --auth-file, under `tokens:`");
    out!("{}", AuthFile::entry_yaml(&entry).trim_end());
    Ok(0)
}
