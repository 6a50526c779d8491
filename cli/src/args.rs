//! The command line: what an operator can ask of the service.

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use url::Url;

/// Operate RD Station connections through the service's API.
///
/// Against a deployed stack, requests are signed with SigV4 from the standard AWS
/// credential chain (environment, profile, SSO, instance role). Against `make run`
/// (a loopback URL) nothing is signed and no credentials are needed.
#[derive(Debug, Parser)]
#[command(name = "rdconn", version)]
pub struct Cli {
    /// The service's base URL: the stack's ApiUrl output, or the local run's.
    #[arg(
        long,
        env = "RDCONN_URL",
        default_value = "http://127.0.0.1:8787",
        global = true
    )]
    pub url: Url,

    /// Print the service's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    /// Sign requests with SigV4: `auto` signs unless the URL is on loopback.
    #[arg(long, value_enum, default_value_t = Signing::Auto, global = true)]
    pub sign: Signing,

    /// AWS region to sign for (default: from an execute-api URL, else the AWS
    /// configuration's region).
    #[arg(long, env = "AWS_REGION", global = true)]
    pub region: Option<String>,

    /// Act in this tenant (operators only; a tenant's own principal acts in
    /// its tenant without it). Without it, an operator's `connections list`
    /// shows every tenant's connections.
    #[arg(long, env = "RDCONN_TENANT", global = true)]
    pub tenant: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments (and exits on bad ones or on `--help`)
    /// with the global options described once, in `rdconn --help`: each
    /// subcommand still accepts them but names them in one line of its help.
    pub fn parse_with_globals_described_once() -> Self {
        let matches = Self::command_with_globals_described_once().get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The command tree [`Cli::parse_with_globals_described_once`] parses.
    pub fn command_with_globals_described_once() -> clap::Command {
        let command = Self::command();
        let globals: Vec<clap::Arg> = command
            .get_arguments()
            .filter(|arg| arg.is_global_set())
            .cloned()
            .collect();
        hide_below(command, &globals)
    }
}

/// `command` whose subcommands (at any depth) hold hidden copies of
/// `globals`: clap copies a global option into a subcommand only where the
/// subcommand has none of that id, so a hidden copy is still accepted there but
/// left out of its help, which names the global options in one line instead.
fn hide_below(command: clap::Command, globals: &[clap::Arg]) -> clap::Command {
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    let named: Vec<String> = globals
        .iter()
        .filter_map(|arg| arg.get_long())
        .map(|long| format!("--{long}"))
        .collect();
    let note = format!(
        "Global options, accepted here too (see `rdconn --help`): {}.",
        named.join(", ")
    );
    names.into_iter().fold(command, |command, name| {
        command.mut_subcommand(name, |sub| {
            let sub = globals
                .iter()
                .fold(sub, |sub, arg| sub.arg(arg.clone().hide(true)))
                .after_help(note.clone());
            hide_below(sub, globals)
        })
    })
}

/// When requests are signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Signing {
    /// Unless the URL is on loopback.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A command that makes one call.
    #[command(flatten)]
    Call(CallCommand),
    /// Import connections from a file of JSON lines, one connection a line:
    /// `{"connection_id", "product", "refresh_token", "access_token"?,
    /// "access_token_expires_at"?, "tags"?}`. Stop refreshing them in the
    /// previous system first: a CRM token is spent by the import. Prints each
    /// line's result as it lands and a summary; safe to run again.
    Import {
        /// The file (`-`: standard input).
        file: std::path::PathBuf,
    },
}

/// The commands that make one call and print its answer.
#[derive(Debug, Subcommand)]
pub enum CallCommand {
    /// Connections: list, show, refresh, set a rate limit, delete.
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Open a connect session and print the link a person opens to connect.
    Connect(ConnectArgs),
    /// Print a link that connects an existing connection's RD Station account
    /// again (same id, product and tags), for one that needs a person.
    Reconnect {
        /// The connection id.
        id: String,
        /// Where to send the person when they are done (an allowed origin).
        #[arg(long)]
        return_url: Option<Url>,
    },
    /// Tenants and the IAM principals that act in each (operators only).
    #[command(subcommand)]
    Tenants(TenantsCommand),
}

/// `tenants ...`.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Every tenant and its principals.
    List,
    /// Add a tenant, or replace its principals.
    Set {
        /// The tenant (lower-case letters, digits and `-`).
        name: String,
        /// An IAM principal ARN that acts in it (a trailing `*` matches a
        /// prefix, e.g. every session of one role); repeat for more, or give
        /// none for a tenant only operators act in.
        #[arg(long = "principal", value_name = "ARN")]
        principals: Vec<String>,
    },
    /// Remove a tenant without connections: its principals act in no tenant.
    Remove {
        /// The tenant.
        name: String,
    },
}

/// `connections ...`.
#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Every connection, or those with a status or product.
    List {
        /// Only connections with this status (`needs-reauth` and `possibly-lost`
        /// are the ones that need a person).
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// Only connections of this product.
        #[arg(long, value_enum)]
        product: Option<Product>,
        /// Only connections with this tag (`key=value`); repeat for more.
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<Tag>,
    },
    /// One connection's state.
    Show {
        /// The connection id.
        id: String,
    },
    /// Refresh a connection's token now (through the single-spend protocol).
    Refresh {
        /// The connection id.
        id: String,
    },
    /// Set how many requests a minute the proxy sends to RD for one connection.
    SetLimit {
        /// The connection id.
        id: String,
        /// Requests a minute (1 to 10000), or `default` for the deployment's.
        limit: RateLimit,
    },
    /// Replace a connection's tags (none given: remove them all).
    SetTags {
        /// The connection id.
        id: String,
        /// Its tags, `key=value` each.
        #[arg(value_name = "KEY=VALUE")]
        tags: Vec<Tag>,
    },
    /// Revoke (Marketing) and delete a connection.
    Delete {
        /// The connection id.
        id: String,
    },
}

/// `connect ID --product P [--reconnect]`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The id the connection will have (your name for the RD Station account).
    pub id: String,
    /// The RD Station product.
    #[arg(long, value_enum)]
    pub product: Product,
    /// Replace an existing connection with this id.
    #[arg(long)]
    pub reconnect: bool,
    /// Where to send the person when they are done (an allowed origin).
    #[arg(long)]
    pub return_url: Option<Url>,
    /// A tag for the connection (`key=value`; repeat for more). With
    /// `--reconnect`, they replace the connection's tags.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<Tag>,
}

/// A tag as given on the command line: `key=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

impl std::str::FromStr for Tag {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok(Self {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(format!("expected key=value, got `{text}`")),
        }
    }
}

/// `tags` as the API's JSON object.
pub fn tags_object(tags: &[Tag]) -> serde_json::Value {
    tags.iter()
        .map(|t| (t.key.clone(), serde_json::Value::from(t.value.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A per-connection rate limit as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimit {
    /// The deployment's limit (`PROXY_RATE_LIMIT_PER_MINUTE`).
    Default,
    /// This many requests a minute.
    PerMinute(u32),
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value == "default" {
            return Ok(Self::Default);
        }
        match value.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Self::PerMinute(n)),
            _ => Err(format!(
                "expected a number of requests a minute (1 or more) or `default`, got `{value}`"
            )),
        }
    }
}

/// A connection's status.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Status {
    /// Refreshing normally.
    Active,
    /// RD refused the refresh token: a person must connect again.
    NeedsReauth,
    /// A rotated refresh token may have been lost.
    PossiblyLost,
}

impl Status {
    /// As the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::NeedsReauth => "needs_reauth",
            Self::PossiblyLost => "possibly_lost",
        }
    }
}

/// An RD Station product.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Product {
    /// RD Station Marketing.
    Marketing,
    /// RD Station CRM (v2).
    Crm,
}

impl Product {
    /// As the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Marketing => "marketing",
            Self::Crm => "crm",
        }
    }
}
