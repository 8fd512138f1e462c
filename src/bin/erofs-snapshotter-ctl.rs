//! `erofs-snapshotter-ctl`: one snapshotter operation per invocation, for
//! operators and scripts (and the tests' second process). Prints JSON on
//! stdout (infos as the C ABI writes them); on failure prints the error on
//! stderr and exits with the C ABI's status code.
//!
//! ```text
//! erofs-snapshotter-ctl --config '{"root": "/var/lib/erofs-snapshotter"}' prepare KEY [PARENT]
//! ```
//! The configuration may also come from `--config-file PATH` or the
//! environment variable `EROFS_SNAPSHOTTER_CONFIG`.

use std::path::Path;
use std::process::ExitCode;

use erofs_snapshotter::ffi::InfoJson;
use erofs_snapshotter::{
    mount_all, unmount_all, ApplyOptions, Config, Error, InfoUpdate, Labels, Snapshotter,
};

const USAGE: &str =
    "usage: erofs-snapshotter-ctl [--config JSON | --config-file PATH] COMMAND [ARGS]
commands:
  prepare KEY [PARENT]      create an active snapshot, print its mounts
  view KEY [PARENT]         create a view, print its mounts
  commit NAME KEY           commit an active snapshot
  mounts KEY                print the mounts of an active snapshot or view
  remove KEY                remove a snapshot
  stat KEY                  print a snapshot's info
  label KEY NAME=VALUE...   set labels (NAME= removes one)
  usage KEY                 print a snapshot's disk usage
  export-layer KEY DIR      put a committed layer into a layer content cache
  apply KEY FILE [TYPE]     apply the OCI layer in FILE (- for stdin) of media
                            type TYPE to an active snapshot, print its diffID
  walk [FILTER...]          print the infos matching any filter
  cleanup                   delete what no snapshot owns
  mount KEY TARGET          mount a snapshot on TARGET
  unmount TARGET            unmount everything on TARGET";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("erofs-snapshotter-ctl: {e}");
            ExitCode::from(erofs_snapshotter::ffi::status(e.kind()) as u8)
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, Error> {
    serde_json::to_string_pretty(v).map_err(|e| Error::internal(format!("encode JSON: {e}")))
}

fn run(args: &[String]) -> Result<String, Error> {
    let mut config_json = std::env::var("EROFS_SNAPSHOTTER_CONFIG").ok();
    let mut rest = args;
    while let Some(flag) = rest.first() {
        match flag.as_str() {
            "--config" => {
                config_json = Some(
                    rest.get(1)
                        .cloned()
                        .ok_or_else(|| Error::invalid_argument("--config needs a value"))?,
                );
                rest = &rest[2..];
            }
            "--config-file" => {
                let path = rest
                    .get(1)
                    .ok_or_else(|| Error::invalid_argument("--config-file needs a value"))?;
                config_json = Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| Error::io("read config file", Path::new(path), e))?,
                );
                rest = &rest[2..];
            }
            "-h" | "--help" => return Ok(USAGE.to_string()),
            "--version" => return Ok(erofs_snapshotter::VERSION.to_string()),
            _ => break,
        }
    }
    let (cmd, rest) = rest
        .split_first()
        .ok_or_else(|| Error::invalid_argument(format!("no command given\n{USAGE}")))?;
    let arg = |i: usize, name: &str| -> Result<&str, Error> {
        rest.get(i)
            .map(String::as_str)
            .ok_or_else(|| Error::invalid_argument(format!("{cmd}: missing {name}")))
    };
    if cmd == "unmount" {
        unmount_all(Path::new(arg(0, "TARGET")?), false)?;
        return Ok(String::new());
    }
    let config_json = config_json.ok_or_else(|| {
        Error::invalid_argument(
            "no configuration: give --config, --config-file or EROFS_SNAPSHOTTER_CONFIG",
        )
    })?;
    let s = Snapshotter::open(Config::from_json(&config_json)?)?;
    let none = Labels::new();
    match cmd.as_str() {
        "prepare" => json(&s.prepare(arg(0, "KEY")?, rest.get(1).map_or("", |p| p), &none)?),
        "view" => json(&s.view(arg(0, "KEY")?, rest.get(1).map_or("", |p| p), &none)?),
        "commit" => s
            .commit(arg(0, "NAME")?, arg(1, "KEY")?, &none)
            .map(|()| String::new()),
        "mounts" => json(&s.mounts(arg(0, "KEY")?)?),
        "remove" => s.remove(arg(0, "KEY")?).map(|()| String::new()),
        "stat" => json(&InfoJson::from(&*s.stat_shared(arg(0, "KEY")?)?)),
        "label" => {
            let mut update = InfoUpdate {
                name: arg(0, "KEY")?.to_string(),
                labels: Labels::new(),
            };
            let mut paths = Vec::new();
            for kv in &rest[1..] {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    Error::invalid_argument(format!("label {kv:?}: expected NAME=VALUE"))
                })?;
                if !v.is_empty() {
                    update.labels.insert(k.to_string(), v.to_string());
                }
                paths.push(format!("labels.{k}"));
            }
            json(&InfoJson::from(&s.update(&update, &paths)?))
        }
        "usage" => json(&s.usage(arg(0, "KEY")?)?),
        "export-layer" => {
            let dir = Path::new(arg(1, "DIR")?);
            let path = s.export_layer(arg(0, "KEY")?, dir)?;
            Ok(format!("{}\n", path.display()))
        }
        "apply" => {
            let file = arg(1, "FILE")?;
            let mut input: Box<dyn std::io::Read + Send> = if file == "-" {
                Box::new(std::io::stdin())
            } else {
                Box::new(
                    std::fs::File::open(file)
                        .map_err(|e| Error::io("open layer", Path::new(file), e))?,
                )
            };
            let opts = ApplyOptions {
                media_type: rest.get(2).cloned().unwrap_or_default(),
                digest: None,
            };
            json(&s.apply(arg(0, "KEY")?, &mut input, &opts)?)
        }
        "walk" => json(
            &s.walk_shared(rest)?
                .iter()
                .map(InfoJson::from)
                .collect::<Vec<_>>(),
        ),
        "cleanup" => s.cleanup().map(|()| String::new()),
        "mount" => {
            let mounts = s.mounts(arg(0, "KEY")?)?;
            mount_all(&mounts, Path::new(arg(1, "TARGET")?))?;
            Ok(String::new())
        }
        other => Err(Error::invalid_argument(format!(
            "unknown command {other:?}\n{USAGE}"
        ))),
    }
}
