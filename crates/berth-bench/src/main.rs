//! `berth-bench`: the load generator behind `scripts/bench.sh`, which compares berth with CNCF
//! Distribution on the same workload in the same run. `run` drives the workload against one
//! registry and prints JSON lines, `startup` times a restart over the populated data,
//! `table` puts two result files side by side, `free-port` helps the script pick a port.

mod ab;
mod ceilings;
mod client;
mod data;
mod load;
mod report;
mod rss;
mod startup;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::report::Emitter;

#[derive(Parser)]
#[command(
    name = "berth-bench",
    about = "Registry benchmark: berth vs CNCF Distribution (see scripts/bench.sh)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the workload against a running registry; one JSON object per metric on stdout.
    Run(RunArgs),
    /// Time start-up over an already populated data directory: spawns COMMAND, polls.
    Startup(StartupArgs),
    /// Print the side-by-side table of two `run`/`startup` outputs.
    Table(TableArgs),
    /// Measure the machine's ceilings (SHA-256 on one core, loopback TCP, durable disk
    /// writes); JSON lines like `run`.
    Ceilings(CeilingsArgs),
    /// Manifest HEAD/GET load against several registries in alternating rounds (berth with
    /// metrics off and on, say): the median of each, and its ratio to the first.
    ManifestAb(AbArgs),
    /// Print a free TCP port on 127.0.0.1.
    FreePort,
}

#[derive(Args)]
struct AbArgs {
    /// `label=URL` of each variant, the first the baseline (e.g. off=http://127.0.0.1:5000).
    #[arg(long = "variant", required = true, num_args = 1)]
    variants: Vec<String>,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Seconds of load per variant, method and round.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Rounds (the order of the variants alternates between rounds).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

#[derive(Args)]
struct RunArgs {
    /// Registry base URL, e.g. http://127.0.0.1:5000
    #[arg(long)]
    url: String,
    /// PID of the registry process (for RSS, read from /proc/PID/status).
    #[arg(long)]
    pid: u32,
    /// Name written into every result (berth, distribution).
    #[arg(long)]
    label: String,
    /// Smoke mode: 64 MiB blobs, 3 s load, 100 repos and tags, 1,000 manifests.
    #[arg(long)]
    quick: bool,
    /// Size of the large blob pushed and pulled, MiB [1024; quick 64].
    #[arg(long)]
    blob_mib: Option<u64>,
    /// PATCH chunk size of the chunked push, MiB.
    #[arg(long, default_value_t = 16)]
    chunk_mib: u64,
    /// Number of concurrent pushes.
    #[arg(long, default_value_t = 16)]
    concurrent: usize,
    /// Size of each concurrent push, MiB [64; quick 4].
    #[arg(long)]
    concurrent_mib: Option<u64>,
    /// Connections for the manifest HEAD/GET load.
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Seconds of manifest HEAD load, then as many of GET load [15; quick 3].
    #[arg(long)]
    load_secs: Option<f64>,
    /// Repositories with one image each [1000; quick 100].
    #[arg(long)]
    repos: Option<usize>,
    /// Tags on one repository for tags/list [1000; quick 100].
    #[arg(long)]
    tags: Option<usize>,
    /// Distinct manifests pushed for the start-up measurement [10000; quick 1000].
    #[arg(long)]
    manifests: Option<usize>,
    /// Repositories those manifests are spread over.
    #[arg(long, default_value_t = 10)]
    manifest_repos: usize,
    /// Run only the manifest PUT phase (new tags, then re-tags).
    #[arg(long)]
    only_manifest_puts: bool,
    /// Requests in flight while pushing repositories, tags and manifests.
    #[arg(long, default_value_t = 16)]
    push_concurrency: usize,
    /// Samples behind each listing latency (median reported).
    #[arg(long, default_value_t = 11)]
    samples: usize,
    /// Listing samples taken one every --spacing-secs, past short-lived caches [5; quick 2].
    #[arg(long)]
    spaced_samples: Option<usize>,
    /// Pause before each spaced listing sample, seconds.
    #[arg(long, default_value_t = 1.5)]
    spacing_secs: f64,
    /// Runs behind each push rate, each with fresh content (median reported).
    #[arg(long, default_value_t = 3)]
    push_runs: usize,
    /// Pause before each timed push, seconds [5; quick 1].
    #[arg(long)]
    push_pause_secs: Option<f64>,
    /// Pulls of the large blob behind each pull rate (median reported).
    #[arg(long, default_value_t = 3)]
    pull_runs: usize,
    /// Seconds to wait before reading idle RSS [5; quick 2].
    #[arg(long)]
    idle_wait_secs: Option<f64>,
}

#[derive(Args)]
struct StartupArgs {
    /// Registry base URL the spawned command listens on.
    #[arg(long)]
    url: String,
    #[arg(long)]
    label: String,
    /// Start-ups to time (median reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Manifests the data directory holds (used in the table's wording).
    #[arg(long, default_value_t = 10000)]
    manifests: usize,
    /// Seconds to wait for each start-up before failing.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// The registry command line, e.g. `-- target/release/berth serve config.yml`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args)]
struct TableArgs {
    /// JSON lines of the first registry (the numerator of the ratio).
    a: PathBuf,
    /// JSON lines of the second registry.
    b: PathBuf,
    #[arg(long, default_value = "berth")]
    a_name: String,
    #[arg(long, default_value = "distribution")]
    b_name: String,
    /// Output of `ceilings`: prints, instead of the table, the best ratio to the second
    /// registry that each ceiling allows.
    #[arg(long)]
    ceilings: Option<PathBuf>,
}

#[derive(Args)]
struct CeilingsArgs {
    /// Directory for the scratch file of the disk measurement (on the registries' disk).
    #[arg(long)]
    dir: PathBuf,
    /// MiB hashed, written and sent.
    #[arg(long, default_value_t = 1024)]
    mib: usize,
}

impl RunArgs {
    fn workload(&self) -> workload::Workload {
        let q = self.quick;
        workload::Workload {
            blob_mib: self.blob_mib.unwrap_or(if q { 64 } else { 1024 }),
            chunk_mib: self.chunk_mib.max(1),
            concurrent: self.concurrent.max(1),
            concurrent_mib: self.concurrent_mib.unwrap_or(if q { 4 } else { 64 }),
            conns: self.conns.max(1),
            load_secs: self.load_secs.unwrap_or(if q { 3.0 } else { 15.0 }),
            repos: self.repos.unwrap_or(if q { 100 } else { 1000 }),
            tags: self.tags.unwrap_or(if q { 100 } else { 1000 }),
            manifests: self.manifests.unwrap_or(if q { 1000 } else { 10000 }),
            manifest_repos: self.manifest_repos.max(1),
            push_concurrency: self.push_concurrency.max(1),
            samples: self.samples.max(1),
            pull_runs: self.pull_runs.max(1),
            push_runs: self.push_runs.max(1),
            push_pause_secs: self
                .push_pause_secs
                .unwrap_or(if q { 1.0 } else { 5.0 })
                .max(0.0),
            spaced_samples: self.spaced_samples.unwrap_or(if q { 2 } else { 5 }),
            spacing_secs: self.spacing_secs.max(0.0),
            only_manifest_puts: self.only_manifest_puts,
            idle_wait_secs: self.idle_wait_secs.unwrap_or(if q { 2.0 } else { 5.0 }),
        }
    }
}

async fn main_async(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => {
            let reg = client::Registry::new(&args.url)?;
            let w = args.workload();
            eprintln!(
                "berth-bench: {} at {} (pid {}): {w:?}",
                args.label, args.url, args.pid
            );
            workload::run(
                &reg,
                args.pid,
                &w,
                &Emitter {
                    registry: args.label,
                },
            )
            .await
        }
        Command::Startup(args) => {
            let (repo, tag) = workload::startup_manifest();
            let s = startup::Startup {
                url: args.url,
                repo: repo.into(),
                tag: tag.into(),
                runs: args.runs as usize,
                manifests: args.manifests,
                timeout: Duration::from_secs(args.timeout_secs),
                command: args.command,
            };
            startup::run(
                &s,
                &Emitter {
                    registry: args.label,
                },
            )
            .await
        }
        Command::Table(args) => {
            let a = report::read_jsonl(&args.a)?;
            let b = report::read_jsonl(&args.b)?;
            match args.ceilings {
                Some(path) => {
                    let c = report::read_jsonl(&path)?;
                    print!("{}", report::ceilings_table(&c, &b, &args.b_name));
                }
                None => print!("{}", report::table(&a, &b, &args.a_name, &args.b_name)),
            }
            Ok(())
        }
        Command::Ceilings(args) => tokio::task::spawn_blocking(move || {
            ceilings::run(
                &args.dir,
                args.mib,
                &Emitter {
                    registry: "machine".into(),
                },
            )
        })
        .await
        .context("ceilings thread panicked")?,
        Command::ManifestAb(args) => {
            let variants = args
                .variants
                .iter()
                .map(|v| {
                    v.split_once('=')
                        .map(|(l, u)| (l.to_owned(), u.to_owned()))
                        .with_context(|| format!("--variant {v:?} is not label=URL"))
                })
                .collect::<Result<Vec<_>>>()?;
            ab::run(&ab::Ab {
                variants,
                conns: args.conns.max(1),
                secs: args.secs.max(0.1),
                rounds: args.rounds.max(1),
            })
            .await
        }
        Command::FreePort => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a port")?;
            println!("{}", l.local_addr()?.port());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(main_async(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
