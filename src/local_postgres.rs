//! The run command's embedded database default, used only when no
//! `DATABASE_URL` is given: the PostgreSQL on 127.0.0.1:5432 if it answers,
//! else a private server started from the machine's PostgreSQL binaries with
//! its data in a folder of the project. Either way the `billing` database is
//! created when missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

const DATABASE: &str = "billing";
const PRIVATE_PORT: u16 = 55432;

/// A private server this process started; stop it when done.
#[derive(Debug)]
pub struct PrivatePostgres {
    data_dir: PathBuf,
    run_as_postgres: bool,
}

impl PrivatePostgres {
    pub fn stop(self) {
        let data_dir = self.data_dir.display().to_string();
        let result = command(self.run_as_postgres, &pg_tool("pg_ctl").unwrap_or_default())
            .args(["-D", &data_dir, "-m", "fast", "-w", "stop"])
            .output();
        if let Err(error) = result {
            tracing::warn!(%error, "could not stop the private PostgreSQL");
        }
    }
}

/// Finds or starts a local PostgreSQL and returns how to reach its `billing`
/// database.
pub async fn resolve(
    data_dir: &Path,
) -> anyhow::Result<(PgConnectOptions, Option<PrivatePostgres>)> {
    let loopback = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(5432)
        .username("postgres")
        .database("postgres");
    if answers(&loopback).await {
        ensure_database(&loopback).await?;
        return Ok((loopback.database(DATABASE), None));
    }
    let Some(pg_ctl) = pg_tool("pg_ctl") else {
        bail!(
            "no DATABASE_URL is set, nothing answers on 127.0.0.1:5432, and no PostgreSQL \
             binaries were found. Install PostgreSQL (e.g. `apt-get install postgresql`) \
             or set DATABASE_URL=postgres://user@host/db"
        );
    };
    let private = start_private(&pg_ctl, data_dir)?;
    let options = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(PRIVATE_PORT)
        .username("postgres")
        .database("postgres");
    ensure_database(&options).await?;
    Ok((options.database(DATABASE), Some(private)))
}

async fn answers(options: &PgConnectOptions) -> bool {
    let attempt = tokio::time::timeout(Duration::from_secs(2), options.connect());
    matches!(attempt.await, Ok(Ok(_)))
}

async fn ensure_database(admin: &PgConnectOptions) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(admin)
        .await
        .context("connecting to the local PostgreSQL")?;
    let exists: bool =
        sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
            .bind(DATABASE)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        sqlx::query(&format!("create database {DATABASE}"))
            .execute(&mut conn)
            .await
            .context("creating the billing database")?;
    }
    conn.close().await?;
    Ok(())
}

/// The newest installed version's tool, or the one on PATH.
fn pg_tool(name: &str) -> Option<String> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin").join(name))
        .filter(|path| path.exists())
        .collect();
    versions.sort();
    if let Some(newest) = versions.pop() {
        return Some(newest.display().to_string());
    }
    Command::new(name)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| name.to_owned())
}

/// PostgreSQL refuses to run as root; as root we run its tools as the
/// `postgres` system user that Debian's packages create.
fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn command(run_as_postgres: bool, program: &str) -> Command {
    if run_as_postgres {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", program]);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let output = cmd.output().with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn start_private(pg_ctl: &str, data_dir: &Path) -> anyhow::Result<PrivatePostgres> {
    let run_as_postgres = running_as_root();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let dir = data_dir.display().to_string();
    if run_as_postgres {
        let mut chown = Command::new("chown");
        chown.args(["-R", "postgres:postgres", &dir]);
        run(chown, "chown of the private PostgreSQL folder")?;
        let reachable = command(true, "test")
            .args(["-w", &dir])
            .status()
            .is_ok_and(|s| s.success());
        if !reachable {
            bail!(
                "the postgres user cannot reach {dir} (a parent folder is private); \
                 set --local-postgres-dir to a folder it can reach, or set DATABASE_URL"
            );
        }
    }
    if !data_dir.join("PG_VERSION").exists() {
        let initdb = Path::new(pg_ctl).with_file_name("initdb");
        let initdb = if initdb.exists() {
            initdb.display().to_string()
        } else {
            "initdb".to_owned()
        };
        let mut cmd = command(run_as_postgres, &initdb);
        cmd.args(["-D", &dir, "-U", "postgres", "--auth=trust", "--no-sync"]);
        run(cmd, "initdb")?;
    }
    let log = format!("{dir}/server.log");
    // One left running by a run that was killed: take it over (this run
    // stops it on exit). pg_ctl status answers 0 only for a live server.
    let already_running = command(run_as_postgres, pg_ctl)
        .args(["-D", &dir, "status"])
        .output()
        .is_ok_and(|o| o.status.success());
    if already_running {
        tracing::info!(%dir, "reusing the private PostgreSQL a previous run left running");
    } else {
        let options = format!("-p {PRIVATE_PORT} -k {dir} -c listen_addresses=127.0.0.1");
        let mut cmd = command(run_as_postgres, pg_ctl);
        cmd.args(["-D", &dir, "-o", &options, "-l", &log, "-w", "start"]);
        run(cmd, "pg_ctl start").with_context(|| format!("the server's log is {log}"))?;
    }
    Ok(PrivatePostgres {
        data_dir,
        run_as_postgres,
    })
}
