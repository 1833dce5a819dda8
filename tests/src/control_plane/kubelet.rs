//! `podcert-kubelet` driven from a test: the kubelet's own pod-certificate code of one release
//! (see `tests/kubernetes/cmd/podcert-kubelet`) running as one node. What it reports — volumes
//! written, the Events it records, its credential states — is read from its stdout; its clock
//! is stepped through its stdin.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::binaries::binary;
use super::process::Process;
use super::{ControlPlane, Node, Release};

#[derive(Debug)]
pub struct PodcertKubelet {
    pub release: Release,
    pub node: Node,
    /// Where the pods' volumes are written: `<out>/<namespace>/<pod>/<volume>/`.
    pub out: PathBuf,
    process: Mutex<Process>,
    stdin: Mutex<ChildStdin>,
    lines: Arc<Mutex<Vec<Value>>>,
}

/// A projected volume as the kubelet last wrote it.
#[derive(Debug, Clone)]
pub struct Mounted {
    pub dir: PathBuf,
    /// File name -> contents.
    pub files: BTreeMap<String, String>,
}

impl Mounted {
    pub fn file(&self, name: &str) -> &str {
        self.files.get(name).unwrap_or_else(|| {
            panic!(
                "no {name} in {}: {:?}",
                self.dir.display(),
                self.files.keys()
            )
        })
    }
}

impl PodcertKubelet {
    /// Starts the kubelet code of `release` as `node` and waits until its informers synced.
    pub async fn start(control_plane: &ControlPlane, release: Release, node: &Node) -> Self {
        let out = control_plane
            .dir
            .path()
            .join(format!("kubelet-{}-{}", node.name, release));
        std::fs::create_dir_all(&out).unwrap();
        let mut cmd = Command::new(binary(&format!("podcert-kubelet@{release}")));
        cmd.arg("--kubeconfig")
            .arg(&node.identity.kubeconfig)
            .args(["--node-name", &node.name])
            .arg("--out")
            .arg(&out)
            .args(["--v", "2"]);
        let log = control_plane
            .dir
            .path()
            .join(format!("podcert-kubelet-{}-{release}.log", node.name));
        let mut process = Process::spawn_piped(&format!("podcert-kubelet {release}"), cmd, &log);
        let stdin = process.child.stdin.take().unwrap();
        let stdout = process.child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"kind": "unparsed", "line": line}));
                sink.lock().unwrap().push(value);
            }
        });
        let kubelet = PodcertKubelet {
            release,
            node: node.clone(),
            out,
            process: Mutex::new(process),
            stdin: Mutex::new(stdin),
            lines,
        };
        kubelet
            .wait_line("its informers to sync", Duration::from_secs(60), |l| {
                l["kind"] == "ready"
            })
            .await;
        kubelet
    }

    /// Everything it has reported so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// The Events it recorded (as the kubelet records them on the pod).
    pub fn events(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["kind"] == "event")
            .collect()
    }

    /// Waits for a reported line that `pred` accepts; panics naming `what` and showing its log.
    pub async fn wait_line(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_line_after(0, what, timeout, pred).await
    }

    /// [`Self::wait_line`] among the lines after the first `skip`.
    pub async fn wait_line_after(
        &self,
        skip: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines().into_iter().skip(skip).find(|l| pred(l)) {
                return l;
            }
            self.process
                .lock()
                .unwrap()
                .assert_running(&format!("the test waited for {what}"));
            assert!(
                Instant::now() < deadline,
                "podcert-kubelet {} ({}): no {what} within {timeout:?}; it reported:\n{:#?}\nits log:\n{}",
                self.release,
                self.node.name,
                self.lines(),
                self.process.lock().unwrap().log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The volume `volume` of pod `namespace/pod` once the kubelet has written it (every source
    /// has its data), read from disk.
    pub async fn mounted(
        &self,
        namespace: &str,
        pod: &str,
        volume: &str,
        timeout: Duration,
    ) -> Mounted {
        let line = self
            .wait_line(
                &format!("volume {volume} of {namespace}/{pod}"),
                timeout,
                |l| {
                    l["kind"] == "volume"
                        && l["namespace"] == namespace
                        && l["pod"] == pod
                        && l["volume"] == volume
                        && l.get("files").is_some()
                },
            )
            .await;
        self.read(&line)
    }

    /// The volume as it is on disk now.
    pub fn read_volume(&self, namespace: &str, pod: &str, volume: &str) -> Mounted {
        let dir = self.out.join(namespace).join(pod).join(volume);
        let mut files = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                // The AtomicWriter's own entries (..data, ..<timestamp>) start with "..".
                if !name.starts_with("..")
                    && let Ok(text) = std::fs::read_to_string(e.path())
                {
                    files.insert(name, text);
                }
            }
        }
        Mounted { dir, files }
    }

    fn read(&self, line: &Value) -> Mounted {
        self.read_volume(
            line["namespace"].as_str().unwrap(),
            line["pod"].as_str().unwrap(),
            line["volume"].as_str().unwrap(),
        )
    }

    fn command(&self, line: &str) {
        writeln!(self.stdin.lock().unwrap(), "{line}").expect("podcert-kubelet reads its stdin");
    }

    /// Steps the kubelet's clock forward by `by` and requeues every pod, as its one-minute
    /// refresh pass would; returns once it has.
    pub async fn advance(&self, by: Duration) {
        let before = self.lines().len();
        self.command(&format!("advance {}s", by.as_secs()));
        self.wait_line_after(before, "the clock to step", Duration::from_secs(10), |l| {
            l["kind"] == "clock"
        })
        .await;
    }

    /// The manager's own report: "<signer> <state>" -> how many projections are in it.
    pub async fn states(&self) -> BTreeMap<String, u64> {
        let before = self.lines().len();
        self.command("report");
        let l = self
            .wait_line_after(before, "its states", Duration::from_secs(10), |l| {
                l["kind"] == "states"
            })
            .await;
        serde_json::from_value(l["states"].clone()).unwrap()
    }
}
