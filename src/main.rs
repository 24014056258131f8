//! The `rebake` command: parses arguments, sets up logging, calls one library function per
//! command, and turns its result into an exit code.

use clap::{Parser, Subcommand, ValueEnum};
use rebake::commands::{self as app, OutputFormat};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rebake",
    version,
    about = "Rebuild Debian-based images when Debian fixes a package, propose them, deploy the tested digest"
)]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// The GitOps repository (holds rebake.yaml, policies/, templates/, images/).
    #[arg(long, global = true, default_value = ".")]
    repo: PathBuf,
    /// The bot's configuration (default: <repo>/rebake.yaml when it exists).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where rebake keeps verified archive state and caches (default: $XDG_STATE_HOME/rebake).
    #[arg(long, global = true, env = "REBAKE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum SbomFormatArg {
    /// SPDX 2.3 JSON.
    Spdx,
    /// CycloneDX 1.6 JSON.
    Cyclonedx,
}

#[derive(Subcommand)]
enum Command {
    /// Render images/<name>/Dockerfile from the templates, policies and locks (no network).
    Render {
        /// Images to render (default: all).
        images: Vec<String>,
        /// Write nothing; print the diff and exit 1 when a committed Dockerfile differs.
        #[arg(long)]
        check: bool,
    },
    /// Scan, build, and open or update one proposal per image with updates.
    Propose {
        /// Images to propose (default: all).
        images: Vec<String>,
        #[arg(long)]
        sources: Option<PathBuf>,
        /// Do not push images to the registry.
        #[arg(long)]
        no_push: bool,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Deploy the tested digests recorded in the default branch's locks to each policy's targets.
    Deploy {
        /// Images to deploy (default: all with deploy targets).
        images: Vec<String>,
        /// A commit of the default branch (default: its head); one older than the commit last
        /// deployed for an image is refused.
        #[arg(long)]
        commit: Option<String>,
        /// Go back deliberately to this commit of the default branch, older than the one last
        /// deployed (recorded as a rollback); names the images.
        #[arg(
            long,
            value_name = "SHA",
            conflicts_with = "commit",
            requires = "images"
        )]
        rollback_to: Option<String>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// The main job: scan, propose, and deploy what has been merged (embedded default without a rebake.yaml).
    Run {
        /// Run one pass and exit (the service is `rebake serve`).
        #[arg(long, required = true)]
        once: bool,
        #[arg(long)]
        sources: Option<PathBuf>,
        /// Do not push images to the registry.
        #[arg(long)]
        no_push: bool,
    },
    /// The service: webhooks (GitHub, Gitea), /healthz, /metrics, scheduled scans and jobs.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: String,
    },
    /// Render, build from a verified base, test, push, and write the lock, per image.
    Build {
        /// Images to build (default: every policy's image).
        images: Vec<String>,
        /// apt deb822 .sources file (default: rebake.yaml's, else the host's apt sources).
        #[arg(long)]
        sources: Option<PathBuf>,
        /// Do not push; the engine's image id is the identity.
        #[arg(long)]
        no_push: bool,
        /// Rebuild even when the lock is current.
        #[arg(long)]
        force: bool,
        /// Build without the engine's layer cache (every RUN step runs again).
        #[arg(long)]
        no_cache: bool,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Validate rebake.yaml, policies and templates (exit 1 on any error).
    Check,
    /// A policy's jobs (commands, backups, restore checks; `rebake serve` runs them on their
    /// schedule).
    Job {
        #[command(subcommand)]
        action: JobAction,
    },
    /// Print an image's bill of materials from its lock (every installed package with its purl).
    Sbom {
        /// The image (its policy's name).
        image: String,
        #[arg(long, value_enum, default_value = "spdx")]
        format: SbomFormatArg,
    },
    /// Check an image against its lock in this checkout: what its deploy targets run, that
    /// the registry has its digest, its signature and attestations (with signing configured),
    /// and with --rebuild that this commit builds the same image id. Exit 4: a target runs
    /// another image; 5: the registry lacks the digest; 6: the rebuild differs; 7: a signature
    /// or attestation check failed.
    Verify {
        /// The image (its policy's name).
        image: String,
        /// Also build this commit (nothing pushed) and compare the image id with the lock's.
        #[arg(long)]
        rebuild: bool,
        /// apt deb822 .sources file to read archives from (default: rebake.yaml's, else the host's apt sources).
        #[arg(long)]
        sources: Option<PathBuf>,
    },
    /// The fleet at a glance: per image its lock, pending updates, open proposal, what each
    /// deploy target runs, its jobs' failures, and the last error.
    Status {
        /// Images to show (default: every policy's image).
        images: Vec<String>,
        /// apt deb822 .sources file to read archives from (default: rebake.yaml's, else the host's apt sources).
        #[arg(long)]
        sources: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Write `rebake status`'s table into the forge's dashboard issue (GitHub, Gitea): opened
    /// once, edited in place, closed when the repository has no policies. `serve` does this
    /// after each scheduled scan.
    Dashboard {
        /// apt deb822 .sources file to read archives from (default: rebake.yaml's, else the host's apt sources).
        #[arg(long)]
        sources: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Report installed packages that have a newer version in the verified Debian archive.
    Scan {
        /// Images to scan (default: every policy's image).
        images: Vec<String>,
        /// apt deb822 .sources file to read archives from (default: rebake.yaml's, else the host's apt sources).
        #[arg(long)]
        sources: Option<PathBuf>,
        /// Scan one dpkg status file instead of the repository's image locks.
        #[arg(long, requires = "suite")]
        dpkg_status: Option<PathBuf>,
        /// Scan every container the engine runs (any image; read through the engine's API,
        /// nothing executed in them) instead of the repository's image locks.
        #[arg(long, conflicts_with_all = ["dpkg_status", "images"])]
        running: bool,
        /// Debian release of the --dpkg-status inventory (e.g. trixie).
        #[arg(long)]
        suite: Option<String>,
        /// Architecture of the --dpkg-status inventory.
        #[arg(long, default_value = "amd64")]
        arch: String,
        /// Debian Security Tracker JSON (file or URL) to name the CVEs each update fixes.
        #[arg(long)]
        security_tracker: Option<String>,
        /// Tracker advisory lists (DSA/list or DLA/list format; file or URL), repeatable.
        #[arg(long)]
        advisories: Vec<String>,
        /// Exit with status 3 when any update is found (for CI).
        #[arg(long)]
        fail_on_updates: bool,
        /// human, json (docs/scan-report.schema.json) or sarif (SARIF 2.1.0, for code scanning).
        #[arg(long, value_enum, default_value = "human")]
        format: ScanFormatArg,
    },
}

#[derive(Subcommand)]
enum JobAction {
    /// Run one job of an image's policy now; waits while a deploy of its target runs. Exit 1
    /// when the job fails.
    Run {
        /// The image (its policy's name).
        image: String,
        /// The job's name in the policy's jobs:.
        job: String,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScanFormatArg {
    Human,
    Json,
    Sarif,
}

impl From<ScanFormatArg> for app::ScanFormat {
    fn from(f: ScanFormatArg) -> Self {
        match f {
            ScanFormatArg::Human => app::ScanFormat::Human,
            ScanFormatArg::Json => app::ScanFormat::Json,
            ScanFormatArg::Sarif => app::ScanFormat::Sarif,
        }
    }
}

impl From<Format> for OutputFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Human => OutputFormat::Human,
            Format::Json => OutputFormat::Json,
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let ctx = app::Context {
        repo: cli.repo,
        config: cli.config,
        state_dir: cli.state_dir,
    };
    let result = match cli.command {
        Command::Check => app::check(&ctx),
        Command::Job {
            action: JobAction::Run { image, job, format },
        } => app::job_run(
            &ctx,
            app::JobRunRequest {
                image,
                job,
                format: format.into(),
            },
        ),
        Command::Sbom { image, format } => app::sbom(
            &ctx,
            app::SbomRequest {
                image,
                format: match format {
                    SbomFormatArg::Spdx => app::SbomFormat::Spdx,
                    SbomFormatArg::Cyclonedx => app::SbomFormat::CycloneDx,
                },
            },
        ),
        Command::Propose {
            images,
            sources,
            no_push,
            format,
        } => app::propose(
            &ctx,
            app::ProposeRequest {
                images,
                sources,
                no_push,
                format: format.into(),
            },
        ),
        Command::Deploy {
            images,
            commit,
            rollback_to,
            format,
        } => app::deploy(
            &ctx,
            app::DeployRequest {
                images,
                rollback: rollback_to.is_some(),
                commit: rollback_to.or(commit),
                format: format.into(),
            },
        ),
        Command::Run {
            once: _,
            sources,
            no_push,
        } => app::run_once(&ctx, app::RunRequest { sources, no_push }),
        Command::Serve { listen } => app::serve(&ctx, &listen),
        Command::Render { images, check } => {
            app::render(&ctx, app::RenderRequest { images, check })
        }
        Command::Build {
            images,
            sources,
            no_push,
            force,
            no_cache,
            format,
        } => app::build(
            &ctx,
            app::BuildRequest {
                images,
                sources,
                no_push,
                force,
                no_cache,
                format: format.into(),
            },
        ),
        Command::Verify {
            image,
            rebuild,
            sources,
        } => app::verify(
            &ctx,
            app::VerifyRequest {
                image,
                sources,
                rebuild,
            },
        ),
        Command::Status {
            images,
            sources,
            format,
        } => app::status(
            &ctx,
            app::StatusRequest {
                images,
                sources,
                format: format.into(),
            },
        ),
        Command::Dashboard { sources, format } => app::dashboard(
            &ctx,
            app::StatusRequest {
                images: Vec::new(),
                sources,
                format: format.into(),
            },
        ),
        Command::Scan {
            images,
            sources,
            dpkg_status,
            running,
            suite,
            arch,
            security_tracker,
            advisories,
            fail_on_updates,
            format,
        } => app::scan(
            &ctx,
            app::ScanRequest {
                images,
                sources,
                dpkg_status,
                running,
                suite,
                arch,
                security_tracker,
                advisories,
                fail_on_updates,
                format: format.into(),
            },
        ),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the cause chain, outermost first.
            eprintln!("rebake: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
