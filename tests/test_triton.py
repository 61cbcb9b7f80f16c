"""The triton backend: the model repository `streamrec engines triton` writes (configs parsed with Triton's own
protobuf definitions), and the client against a real Triton server on loopback (PyTriton's bundled tritonserver,
serving the repository's ONNX models through ONNX Runtime: tests/helpers.py TritonServer)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from streamrec.core.bundle import Bundle
from streamrec.core.graphs import graph_spec
from streamrec.engines import EngineError, load_networks
from streamrec.engines.tensorrt_engine import tensorrt_status
from streamrec.engines.triton_client import TritonOptions, check_served, parse_triton_url, triton_engines
from streamrec.engines.triton_repo import RepositoryOptions, model_config, model_name, use_plans, write_repository
from streamrec.runtime.options import RuntimeOptions
from streamrec.runtime.pipeline import Runtime
from streamrec.runtime.sinks import CallbackSink
from streamrec.runtime.sources import SourceSpec
from streamrec.train.evaluate import evaluate

from .helpers import TritonServer, free_port

KINDS = ("audio", "video", "fusion")
TENSORRT, TENSORRT_WHY = tensorrt_status()


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def predictions(events: list[dict]) -> dict[tuple[str, int], dict]:
    return {(e["stream"], e["seq"]): e for e in events if e["type"] == "prediction"}


def assert_same_predictions(got: list[dict], expected: list[dict]) -> None:
    """Same updates, same fused scores (to float32 noise), same active classes and modalities."""
    a, b = predictions(got), predictions(expected)
    assert a.keys() == b.keys() and a
    for key, e in b.items():
        g = a[key]
        assert g["t"] == e["t"] and g["active"] == e["active"], key
        assert [x["name"] for x in g["labels"]] == [x["name"] for x in e["labels"]], key
        for x, y in zip(g["labels"], e["labels"]):
            assert x["score"] == pytest.approx(y["score"], abs=1e-4), key


@pytest.mark.parametrize("plan", [False, True], ids=["onnx", "tensorrt-plan"])
def test_every_config_parses_with_tritons_protobuf_and_states_the_graph(tagged_bundle: Path, plan: bool) -> None:
    bundle = Bundle.load(tagged_bundle)
    options = RepositoryOptions(max_batch=8, queue_delay_us=250, instances=2)
    for kind in (*KINDS, "tagger"):
        config = parse(model_config(bundle, kind, plan, options))
        spec = graph_spec(bundle, kind)
        assert config.name == model_name(kind) and config.max_batch_size == 8
        for served, expected in ((config.input, spec.inputs), (config.output, spec.outputs)):
            assert [(t.name, tuple(t.dims), model_config_pb2.DataType.Name(t.data_type)) for t in served] == [
                (s.name, tuple(s.shape[1:]), "TYPE_FP32") for s in expected
            ]
        assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
        assert config.dynamic_batching.max_queue_delay_microseconds == 250
        group = config.instance_group[0]
        assert group.count == 2 and group.kind == (group.KIND_GPU if plan else group.KIND_CPU)
        assert (config.platform, config.backend) == (("tensorrt_plan", "") if plan else ("", "onnxruntime"))
        assert list(config.version_policy.specific.versions) == [1]
        assert config.parameters["weights_sha256"].string_value == bundle.network(kind)["sha256"]


def test_a_served_model_unlike_the_bundle_is_refused(runtime_bundle: Path) -> None:
    bundle = Bundle.load(runtime_bundle)
    text = model_config(bundle, "audio", False, RepositoryOptions())
    served = json_format.MessageToDict(parse(text), preserving_proto_field_name=True)  # as get_model_config gives it
    assert check_served(served, bundle, "audio") == 16
    other_dims = json.loads(json.dumps(served))
    other_dims["input"][0]["dims"] = ["64", "100"]
    with pytest.raises(EngineError, match="input logmel"):
        check_served(other_dims, bundle, "audio")
    other_weights = json.loads(json.dumps(served))
    other_weights["parameters"]["weights_sha256"]["string_value"] = "0" * 64
    with pytest.raises(EngineError, match="other weights"):
        check_served(other_weights, bundle, "audio")


@pytest.mark.parametrize(
    ("url", "target"),
    [("grpc://gpu-host:8001", "gpu-host:8001"), ("10.0.0.5", "10.0.0.5:8001"), ("grpc://[::1]:9001/", "[::1]:9001")],
)
def test_triton_url_forms(url: str, target: str) -> None:
    assert parse_triton_url(url) == target


@pytest.mark.parametrize("url", [None, "http://host:8000", "grpc://host:port", "grpc://:8001"])
def test_a_bad_or_missing_triton_url_is_one_line(runtime_bundle: Path, url: str | None) -> None:
    with pytest.raises(EngineError, match="triton"):
        load_networks(runtime_bundle, "triton", triton_url=url)


def test_no_server_at_the_url_is_one_line_after_the_connect_time(runtime_bundle: Path) -> None:
    url = f"grpc://127.0.0.1:{free_port()}"
    with pytest.raises(EngineError, match="not ready after 0.5 s"):
        triton_engines(Bundle.load(runtime_bundle), TritonOptions(url, connect_seconds=0.5))


@pytest.mark.skipif(TENSORRT, reason="TensorRT and a GPU are here: plans can be built")
def test_tensorrt_plans_asked_for_without_tensorrt_are_one_line() -> None:
    with pytest.raises(EngineError, match="--format onnx"):
        use_plans("tensorrt")
    assert not use_plans("auto") and not use_plans("onnx")


@pytest.mark.slow
@pytest.mark.skipif(not TENSORRT, reason=f"GPU only: {TENSORRT_WHY}")
def test_a_repository_of_tensorrt_plans(runtime_bundle: Path, tmp_path: Path) -> None:
    for model in write_repository(runtime_bundle, tmp_path, RepositoryOptions(format="tensorrt"), progress=False):
        config = parse((model / "config.pbtxt").read_text())
        assert config.platform == "tensorrt_plan" and (model / "1" / "model.plan").stat().st_size > 1000


@pytest.mark.slow
def test_the_repository_holds_a_version_folder_and_config_per_network(triton_repository: Path) -> None:
    for kind in KINDS:
        model = triton_repository / model_name(kind)
        assert parse((model / "config.pbtxt").read_text()).name == model.name
        assert (model / "1" / "model.onnx").stat().st_size > 1000


@pytest.mark.slow
def test_two_clips_through_triton_give_onnxruntimes_predictions_and_eval_figures(
    triton_server: TritonServer, runtime_bundle: Path, runtime_clips: Path, make_dataset, streamrec_cli, tmp_path: Path
) -> None:
    clips = [str(runtime_clips / "av.mp4"), str(runtime_clips / "tone.wav")]
    runs = {}
    for backend in ("onnxruntime", "triton"):
        jsonl = tmp_path / f"{backend}.jsonl"
        code = streamrec_cli(
            "run", *clips, "--model", str(runtime_bundle), "--backend", backend, "--triton-url", triton_server.url,
            "--fast", "--no-view", "--jsonl", str(jsonl),
        )  # fmt: skip
        assert code == 0
        runs[backend] = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert {k[0] for k in predictions(runs["triton"])} == {"av", "tone"}
    assert_same_predictions(runs["triton"], runs["onnxruntime"])

    dataset = make_dataset(
        [
            ("clips/violin.mp4", "violin", "test"),
            ("clips/piano.mp4", "piano", "test"),
            ("clips/drums.mp4", "drums", "test"),
        ]
    )
    figures = {
        backend: evaluate(dataset, runtime_bundle, backend=backend, workers=1, triton_url=triton_server.url)
        for backend in ("onnxruntime", "triton")
    }
    for modality in KINDS:
        ort, triton = figures["onnxruntime"][modality], figures["triton"][modality]
        assert triton["n"] == ort["n"] > 0
        assert abs(triton["f1_macro"] - ort["f1_macro"]) <= 0.005 and triton["hit1"] == ort["hit1"]


@pytest.mark.slow
def test_a_killed_and_restarted_server_is_reported_and_the_run_goes_on(
    triton_server: TritonServer, runtime_bundle: Path, runtime_clips: Path
) -> None:
    sources = [
        SourceSpec("file", str(runtime_clips / "av.mp4"), "av", realtime=False),
        SourceSpec("file", str(runtime_clips / "tone.wav"), "tone", realtime=False),
    ]
    reference: list[dict] = []
    Runtime(
        sources, RuntimeOptions(bundle=runtime_bundle, backend="onnxruntime"), [CallbackSink(reference.append)]
    ).run()

    events: list[dict] = []
    restarted = threading.Event()

    def receive(event: dict) -> None:
        events.append(event)
        if event["type"] == "prediction" and len(predictions(events)) == 2 and not restarted.is_set():
            restarted.set()
            triton_server.kill()  # mid-run: the next network call finds no server
            threading.Thread(target=triton_server.start, daemon=True).start()

    # One update per network call: with larger batches a fast machine can evaluate every window of these short files
    # in the first call, before the kill, and the outage would go unseen.
    options = RuntimeOptions(bundle=runtime_bundle, backend="triton", triton_url=triton_server.url, max_batch=1)
    summary = Runtime(sources, options, [CallbackSink(receive)]).run()
    assert restarted.is_set() and summary.exit_code == 0
    for stream in ("av", "tone"):
        states = [e["state"] for e in events if e["type"] == "status" and e["stream"] == stream]
        # A restarting server loads its models one by one: a request to one still loading fails again.
        outage = states[1:-1]
        assert states[0] == "started" and states[-1] == "ended" and outage, states
        assert outage == ["reconnecting", "started"] * (len(outage) // 2), states
    # A file waits for inference: every window is evaluated once the server is back, as without the outage.
    assert_same_predictions(events, reference)
