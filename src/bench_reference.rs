//! The diffusers side of the torch benchmarks: a Python child process driven line by line
//! (`run` → `{"seconds": …}`, `done` → a summary), so both sides alternate in one run.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub struct Reference {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Reference {
    /// Starts `python script args…` and waits for its ready line; returns its build time.
    pub fn start(python: &Path, script: &str, args: &[String]) -> Result<(Self, f64)> {
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "running {} {script} (run scripts/setup --oracle first)",
                    python.display()
                )
            })?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("child stdout")?);
        let mut reference = Self {
            child,
            stdin,
            stdout,
        };
        let ready = reference.read()?;
        let build_s = ready["build_s"]
            .as_f64()
            .context("no build_s in the reference's ready line")?;
        Ok((reference, build_s))
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the diffusers reference exited early (see its stderr above)");
        }
        serde_json::from_str(&line)
            .with_context(|| format!("bad line from the diffusers reference: {line}"))
    }

    fn command(&mut self, cmd: &str) -> Result<Value> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        self.read()
    }

    /// One timed run on the reference side, in seconds.
    pub fn run_once(&mut self) -> Result<f64> {
        self.command("run")?["seconds"]
            .as_f64()
            .context("no seconds from the diffusers reference")
    }

    /// Ends the child and returns its summary line (peak RSS and the like).
    pub fn finish(mut self) -> Result<Value> {
        let summary = self.command("done")?;
        self.child.wait()?;
        Ok(summary)
    }
}
