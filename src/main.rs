//! The `mcp-edge` command: `run`, `check`, `certs`, `audit` and `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status for configuration errors (as linkerd and sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// HTTPS zero-trust edge proxy for MCP servers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a config file.
    Run {
        /// Path to the TOML config file.
        #[arg(long, short, env = "MCP_EDGE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file and every file it names, print a summary, and exit.
    Check {
        /// Path to the TOML config file.
        #[arg(long, short, env = "MCP_EDGE_CONFIG")]
        config: PathBuf,
    },
    /// Certificate tools.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Run a self-contained demo: dev PKI, a demo MCP backend, and the proxy in front of it.
    Demo {
        /// Address for the proxy.
        #[arg(long, default_value = "127.0.0.1:8443")]
        bind: SocketAddr,
        /// Directory for the generated certificates and config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// List every certificate and CRL the config uses, with expiry and alert level.
    ///
    /// Covers server chains (default and SNI), the client CA bundle and CRLs, issuer and
    /// upstream CAs, upstream client certificates and the webhook CA. Levels use
    /// `[certs] warn_before` and `critical_before`; a file that cannot be read is critical.
    #[command(after_help = "Exit status:\n  \
        0   every entry is ok\n  \
        1   the worst entry is a warning (within certs.warn_before)\n  \
        2   an entry is critical (within certs.critical_before), expired, or unreadable\n  \
        64  the config file cannot be loaded")]
    Status {
        /// Path to the TOML config file.
        #[arg(long, short, env = "MCP_EDGE_CONFIG")]
        config: PathBuf,
        /// Print JSON (`{"certificates": [...], "worst": "ok|warning|critical|expired"}`).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify an audit log's hash chain: exit 0 intact, 1 tampered, 64 unreadable or bad key.
    Verify {
        /// The audit log (JSON lines).
        file: PathBuf,
        /// HMAC key file the log was written with (32 raw bytes or base64).
        #[arg(long, value_name = "FILE")]
        hmac_key: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto library for everything; must happen before any rustls config is built.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match cli.command {
        Command::Check { config } => runtime(async move {
            match mcp_edge::check::run(&config).await {
                Ok(summary) => {
                    print!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mcp-edge check: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }),
        Command::Run { config } => {
            let cfg = match mcp_edge::config::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("mcp-edge: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            mcp_edge::telemetry::init(cfg.log.format, &cfg.log.level);
            runtime(async move {
                let running = match mcp_edge::app::start(cfg).await {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("mcp-edge: {e}");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                };
                match mcp_edge::app::run_until_signal(running).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("mcp-edge: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Certs {
            command: CertsCommand::Status { config, json },
        } => certs_status(&config, json),
        Command::Audit {
            command: AuditCommand::Verify { file, hmac_key },
        } => audit_verify(&file, hmac_key.as_deref()),
        Command::Demo { bind, data_dir } => runtime(async move {
            match mcp_edge::demo::run(mcp_edge::demo::DemoOptions { bind, data_dir }).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mcp-edge demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}

fn certs_status(config: &std::path::Path, json: bool) -> ExitCode {
    use mcp_edge::certs::inventory::{self, Level, Report};
    let cfg = match mcp_edge::config::load(config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("mcp-edge certs status: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let statuses = inventory::inventory(&cfg, std::time::SystemTime::now());
    let report = Report::new(&statuses);
    let text = if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => text + "\n",
            Err(e) => {
                eprintln!("mcp-edge certs status: cannot encode JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        inventory::table(&statuses)
    };
    // `write_all` rather than `print!`: a reader that stops early (`| head`) must not turn
    // into a panic, and the exit status below still reports the certificates.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    // Cron and monitoring read the status: 1 asks for attention, 2 for action now.
    ExitCode::from(match report.worst {
        Level::Ok => 0,
        Level::Warning => 1,
        Level::Critical | Level::Expired => 2,
    })
}

fn audit_verify(file: &std::path::Path, hmac_key: Option<&std::path::Path>) -> ExitCode {
    let key = match hmac_key.map(mcp_edge::session::load_key_file).transpose() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("mcp-edge audit verify: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match mcp_edge::audit::verify_file(file, key.as_ref().map(|k| &k[..])) {
        Ok(report) => {
            println!("{}: {report}", file.display());
            if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("mcp-edge audit verify: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn runtime(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("mcp-edge: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
