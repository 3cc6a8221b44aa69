//! A throwaway PostgreSQL cluster for the tests that load into one (`loaders`, `ddl`,
//! `load_sql`, `postgres`): `initdb` and `pg_ctl` from `ZEPHR_ETL_TEST_PG_BIN`, the PATH or
//! Debian's `/usr/lib/postgresql/N/bin`, on a free port of 127.0.0.1, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A throwaway PostgreSQL cluster on 127.0.0.1, stopped on drop.
pub struct Postgres {
    pub bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    /// `runuser -u postgres --` when the tests run as root (initdb refuses root).
    run_as: Option<String>,
    /// The superuser's password when TCP connections must give one (`start_with_password`).
    password: Option<String>,
    _dir: TempDir,
}

impl Postgres {
    /// Finds the binaries; `None` when PostgreSQL is not installed.
    pub fn bin_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("ZEPHR_ETL_TEST_PG_BIN").map(PathBuf::from)
            && dir.join("initdb").is_file()
        {
            return Some(dir);
        }
        if let Ok(path) = std::env::var("PATH") {
            for dir in std::env::split_paths(&path) {
                if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                    // Some images link only initdb and pg_ctl onto the PATH: the folder that
                    // really holds them has psql too.
                    let real = std::fs::canonicalize(dir.join("initdb")).ok()?;
                    return real.parent().map(Path::to_path_buf);
                }
            }
        }
        // Debian keeps them out of the PATH, one folder per major version: take the newest.
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(path);
                cmd
            }
            None => Command::new(path),
        }
    }

    pub fn start(bin: PathBuf) -> Postgres {
        Postgres::start_with(bin, None)
    }

    /// A cluster whose TCP connections (as the tool's are) must give `password` (SCRAM).
    pub fn start_with_password(bin: PathBuf, password: &str) -> Postgres {
        Postgres::start_with(bin, Some(password))
    }

    fn start_with(bin: PathBuf, password: Option<&str>) -> Postgres {
        let dir = TempDir::new().unwrap();
        let uid = Command::new("id").arg("-u").output().unwrap();
        let root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let run_as = root.then(|| "postgres".to_string());
        if root {
            let status = Command::new("chown")
                .args(["-R", "postgres:", s(dir.path())])
                .status()
                .unwrap();
            assert!(status.success(), "chown to the postgres user");
        }
        // A free port: bind, read it, let go (the cluster takes it a moment later).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Postgres {
            bin,
            data: dir.path().join("data"),
            port,
            run_as,
            password: password.map(str::to_owned),
            _dir: dir,
        };
        let pwfile = pg._dir.path().join("pwfile");
        std::fs::write(&pwfile, password.unwrap_or_default()).unwrap();
        if root {
            let _ = Command::new("chown")
                .args(["postgres:", s(&pwfile)])
                .status();
        }
        let auth: Vec<String> = match password {
            Some(_) => vec![
                "--auth-local=trust".into(),
                "--auth-host=scram-sha-256".into(),
                format!("--pwfile={}", s(&pwfile)),
            ],
            None => vec!["-A".into(), "trust".into()],
        };
        let initdb = pg
            .command("initdb")
            .args(["-D", s(&pg.data), "-U", "postgres"])
            .args(&auth)
            .args(["-E", "UTF8", "--no-locale", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            s(pg._dir.path())
        );
        let log = pg._dir.path().join("log");
        let start = pg
            .command("pg_ctl")
            .args(["-D", s(&pg.data), "-o", &options, "-l", s(&log)])
            .args(["-w", "-t", "60", "start"])
            .output()
            .unwrap();
        assert!(
            start.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&start.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        pg
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `-o`'s URL for `schema` in the `postgres` database as the `postgres` user.
    pub fn url(&self, schema: &str) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/postgres?schema={schema}",
            self.port
        )
    }

    /// psql as the client, with the password when the cluster wants one.
    fn client(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(password) = &self.password {
            cmd.env("PGPASSWORD", password);
        }
        cmd
    }

    /// Runs a psql script as the client (it reads and writes files as this user); panics
    /// with psql's message on the first error.
    pub fn psql(&self, script: &str) -> String {
        let output = self
            .client()
            .args(["-U", "postgres", "-d", "postgres", "-X", "-q", "-t", "-A"])
            .args(["-v", "ON_ERROR_STOP=1", "-c", script])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "psql failed: {}\nscript:\n{script}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs psql on a script file (for `\copy`, a psql command that `-c` cannot chain).
    pub fn psql_file(&self, path: &Path) {
        let output = self
            .client()
            .args(["-U", "postgres", "-d", "postgres", "-X", "-q"])
            .args(["-v", "ON_ERROR_STOP=1", "-f", s(path)])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "psql failed: {}\nscript:\n{}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(path).unwrap_or_default()
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", s(&self.data), "-m", "immediate", "-w", "stop"])
            .output();
    }
}
