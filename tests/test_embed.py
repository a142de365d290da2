"""Data path and embeddings (lightly_worker.embed): listing, checks, embeddings, CSV, SimCLR. CPU, < 60 s."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from lightly_worker.embed import (
    EmbedConfig,
    EmbeddingsError,
    TrainConfig,
    av_available,
    check_samples,
    embed_samples,
    frame_name,
    list_samples,
    load_custom_embeddings,
    load_simclr_checkpoint,
    nt_xent,
    save_embeddings,
    train_simclr,
)
from PIL import Image, ImageDraw


def picture(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A structured test picture: background gradient plus random coloured shapes."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.linspace(0, 1, w)[None, :, None] * rng.uniform(0, 255, 3) + rng.uniform(0, 80, 3)
    im = Image.fromarray(np.broadcast_to(base, (h, w, 3)).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    return im


def write(root: Path, rel: str, seed: int, fmt: str | None = None, **kw: object) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    picture(seed).save(path, format=fmt, **kw)
    return path


def log_() -> logging.Logger:
    return logging.getLogger("test_embed")


# ---------------------------------------------------------------------------------------------------------------
# listing


def test_list_samples_nested_hidden_and_relevant(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, "b.jpg", 1)
    write(tmp_path, "a/c.PNG", 2, fmt="PNG")
    write(tmp_path, "a/deeper/d.webp", 3, fmt="WEBP")
    write(tmp_path, ".lightly/embeddings/x.jpg", 4)
    write(tmp_path, "a/.hidden.jpg", 5)
    (tmp_path / "notes.txt").write_text("not an image")
    assert list_samples(tmp_path) == ["a/c.PNG", "a/deeper/d.webp", "b.jpg"]

    missing: list[str] = []
    with caplog.at_level(logging.WARNING):
        got = list_samples(tmp_path, ["b.jpg", "./a/c.PNG", "nope.jpg", "b.jpg", ""], missing=missing)
    assert got == ["a/c.PNG", "b.jpg"]
    assert missing == ["nope.jpg"]
    assert "nope.jpg" in caplog.text


def test_list_samples_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list_samples(tmp_path / "absent")


def test_frame_name_matches_lightly() -> None:
    assert frame_name("my_video.mp4", 153, 1000) == "my_video-0153-mp4.png"
    assert frame_name("dir/clip.MOV", 7, 12) == "dir/clip-07-MOV.png"


# ---------------------------------------------------------------------------------------------------------------
# corruptness and duplicates


def test_check_samples_corrupt_and_duplicates(tmp_path: Path) -> None:
    good = write(tmp_path, "a.jpg", 1, quality=90)
    write(tmp_path, "b.png", 2, fmt="PNG")
    (tmp_path / "copy_of_a.jpg").write_bytes(good.read_bytes())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a_again.jpg").write_bytes(good.read_bytes())
    data = good.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG but not really" + bytes(range(200)))
    write(tmp_path, "jpeg_named.png", 3, fmt="JPEG")
    write(tmp_path, "c.bmp", 4, fmt="BMP")

    names = [*list_samples(tmp_path), "does_not_exist.jpg"]
    for workers in (0, 2):
        res = check_samples(tmp_path, names, num_workers=workers, log=log_())
        assert set(res.corrupt) == {"truncated.jpg", "empty.jpg", "garbage.png", "jpeg_named.png", "does_not_exist.jpg"}
        assert "0 bytes" in res.corrupt["empty.jpg"]
        assert "JPEG" in res.corrupt["jpeg_named.png"]
        assert res.duplicates == {"copy_of_a.jpg": "a.jpg", "sub/a_again.jpg": "a.jpg"}
        assert res.ok == ["a.jpg", "b.png", "c.bmp"]


# ---------------------------------------------------------------------------------------------------------------
# embeddings

CPU_CFG = EmbedConfig(input_size=96, batch_size=4, num_workers=0, device="cpu", torch_threads=1)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for i in range(7):
        write(root, f"img_{i}.jpg", 100 + i, quality=92)
    # near duplicate of img_0: re-encoded at lower quality, slightly cropped and brightened
    im = Image.open(root / "img_0.jpg").convert("RGB")
    im = im.crop((3, 2, im.width - 3, im.height - 2)).point(lambda v: min(255, v + 6))
    im.save(root / "img_0_near.jpg", quality=60)
    write(root, "img_png.png", 200, fmt="PNG")
    return root


def test_embed_shape_normalisation_order_determinism(image_dir: Path) -> None:
    names = list_samples(image_dir)
    emb = embed_samples(image_dir, names, CPU_CFG, log=log_())
    assert emb.shape == (len(names), 1280) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)

    again = embed_samples(image_dir, names, CPU_CFG, log=log_())
    np.testing.assert_array_equal(emb, again)

    rev = embed_samples(image_dir, names[::-1], CPU_CFG, log=log_())
    np.testing.assert_allclose(rev[::-1], emb, atol=1e-5)

    calls: list[tuple[int, int]] = []
    cfg = EmbedConfig(input_size=96, batch_size=3, num_workers=2, device="cpu", torch_threads=1)
    workers = embed_samples(image_dir, names, cfg, progress=lambda d, t: calls.append((d, t)), log=log_())
    np.testing.assert_allclose(workers, emb, atol=1e-5)
    assert calls[-1] == (len(names), len(names))

    raw = embed_samples(image_dir, names[:2], EmbedConfig(**{**CPU_CFG.__dict__, "normalize": False}), log=log_())
    assert np.linalg.norm(raw, axis=1).min() > 1.5  # not unit length


def test_near_duplicate_is_closest(image_dir: Path) -> None:
    names = list_samples(image_dir)
    cfg = EmbedConfig(input_size=224, batch_size=16, num_workers=0, device="cpu")
    emb = embed_samples(image_dir, names, cfg, log=log_())
    a, near = names.index("img_0.jpg"), names.index("img_0_near.jpg")
    d = np.linalg.norm(emb - emb[a], axis=1)
    others = [d[i] for i in range(len(names)) if i not in (a, near)]
    assert d[near] < 0.8 * min(others), (d[near], sorted(others))


def test_embed_bad_file_gets_zero_row(tmp_path: Path) -> None:
    write(tmp_path, "ok.jpg", 1)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    failed: list[str] = []
    emb = embed_samples(tmp_path, ["bad.jpg", "ok.jpg", "gone.jpg"], CPU_CFG, failed=failed, log=log_())
    assert failed == ["bad.jpg", "gone.jpg"]
    assert not emb[0].any() and not emb[2].any() and emb[1].any()


def test_embed_empty_and_unknown_model(tmp_path: Path) -> None:
    assert embed_samples(tmp_path, [], CPU_CFG, log=log_()).shape == (0, 1280)
    with pytest.raises(ValueError, match="simclr"):
        embed_samples(tmp_path, [], EmbedConfig(model="simclr", device="cpu"))


# ---------------------------------------------------------------------------------------------------------------
# custom embeddings CSV


def test_csv_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = ["a.jpg", "dir/b,with comma.png", 'quote".jpg']
    emb = rng.standard_normal((3, 5)).astype(np.float32)
    path = tmp_path / "out" / "embeddings.csv"
    save_embeddings(path, names, emb)
    assert (
        path.read_text().splitlines()[0]
        == "filenames,embedding_0,embedding_1,embedding_2,embedding_3,embedding_4,labels"
    )
    got_names, got = load_custom_embeddings(path)
    assert got_names == names
    np.testing.assert_array_equal(got, emb)
    assert got.dtype == np.float32


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("name,embedding_0,labels\na,1,0\n", "line 1: bad header: the first column must be 'filenames'"),
        ("filenames,embedding_0,embedding_2,labels\na,1,2,0\n", "'embedding_1'"),
        ("filenames,embedding_0,embedding_1\na,1,2\n", "last column must be 'labels'"),
        ("filenames,embedding_0,embedding_1,labels\na,1,2,0\nb,1,0\n", "line 3: 3 columns, the header has 4"),
        ("filenames,embedding_0,embedding_1,labels\na,1,2,0\nb,1,x,0\n", "line 3: embedding_1 is not a finite number"),
        ("filenames,embedding_0,labels\na,nan,0\n", "not a finite number"),
        ("filenames,embedding_0,labels\na,1,0\nb,2,0\na,3,0\n", "line 4: duplicate filename (first on line 2)"),
        ("filenames,embedding_0,labels\n,1,0\n", "empty filename"),
        ("filenames,embedding_0,labels\na,1,cat\n", "line 2: the label is not an integer"),
    ],
)
def test_csv_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "e.csv"
    path.write_text(content)
    with pytest.raises(EmbeddingsError) as err:
        load_custom_embeddings(path)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)
    for cell in ("'x'", "'a'", "'cat'", "'name'"):  # issue 9.3: parse errors never quote the file's content
        assert cell not in str(err.value)


def test_csv_errors_never_quote_the_file(tmp_path: Path) -> None:
    """Issue 9.3: a file that is not an embeddings CSV (say /etc/passwd) yields no line of it in the error."""
    path = tmp_path / "passwd"
    path.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    with pytest.raises(EmbeddingsError) as err:
        load_custom_embeddings(path)
    assert "root:x" not in str(err.value) and "line 1" in str(err.value)
    path.write_bytes(b"filenames,embedding_0,labels\n\xff\xfe,1,0\n")
    with pytest.raises(EmbeddingsError, match="not valid CSV"):
        load_custom_embeddings(path)


def test_symlink_loops_outside_links_and_configmap_layout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 9.4: ``a -> .`` and ``b -> .`` hung the listing; links out of the input were followed."""
    root, outside = tmp_path / "input", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    for p in (root / "x.jpg", root / "sub" / "y.jpg", outside / "secret.jpg"):
        p.write_bytes(b"img")
    (root / "a").symlink_to(".")
    (root / "b").symlink_to(".")
    (root / "loop").symlink_to("..")  # the parent of the input: outside
    (root / "sub" / "up").symlink_to("..")
    (root / "leak.jpg").symlink_to(outside / "secret.jpg")
    (root / "outdir").symlink_to(outside)
    (root / "broken.jpg").symlink_to("nowhere.jpg")
    (root / "alias").symlink_to("sub")
    (root / "bad\nname.jpg").write_bytes(b"img")
    (root / "tab\tname.jpg").write_bytes(b"img")  # any control character: the server refuses them too
    # a Kubernetes ConfigMap/Secret volume: hidden timestamped folder, ..data -> it, keys link through ..data
    (root / "..2026_12_01_00_00_00.1" / "cm").mkdir(parents=True)
    (root / "..2026_12_01_00_00_00.1" / "cm" / "z.jpg").write_bytes(b"img")
    (root / "..2026_12_01_00_00_00.1" / "key.jpg").write_bytes(b"img")
    (root / "..data").symlink_to("..2026_12_01_00_00_00.1")
    (root / "key.jpg").symlink_to("..data/key.jpg")
    (root / "cm").symlink_to("..data/cm")
    with caplog.at_level(logging.WARNING):
        names = list_samples(root)
    assert names == ["cm/z.jpg", "key.jpg", "sub/y.jpg", "x.jpg"]
    text = caplog.text
    for link in ("a", "b", "alias", "sub/up"):
        assert f"skipping symlink {link}: it points to a folder that is already listed" in text
    for link in ("leak.jpg", "outdir", "loop"):
        assert f"skipping symlink {link}: it points outside the input folder" in text
    assert "skipping symlink broken.jpg: its target does not exist" in text
    assert "file names with a line break are not supported" in text and "tab\\tname.jpg" in text
    assert str(outside) not in text


def test_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingsError, match="cannot open"):
        load_custom_embeddings(tmp_path / "nope.csv")


# ---------------------------------------------------------------------------------------------------------------
# SimCLR


def test_nt_xent_prefers_matching_pairs() -> None:
    z = torch.randn(8, 16)
    assert nt_xent(z, z, 0.5) < nt_xent(z, torch.randn(8, 16), 0.5)


def test_train_simclr_tiny(tmp_path: Path) -> None:
    for i in range(6):
        write(tmp_path, f"img_{i}.jpg", i)
    names = list_samples(tmp_path)
    cfg = TrainConfig(
        model_name="resnet-tiny", num_ftrs=16, out_dim=32, input_size=32, batch_size=4, max_epochs=1, lr=0.1
    )
    cfg.num_workers = 0
    ckpt = tmp_path / "out" / "lightly_epoch_1.ckpt"
    steps: list[tuple[int, int]] = []
    model = train_simclr(
        tmp_path, names, cfg, device="cpu", checkpoint_path=ckpt, progress=lambda d, t: steps.append((d, t))
    )
    assert steps[-1] == (1, 1)  # 6 samples, batch 4, drop_last
    emb = embed_samples(tmp_path, names, EmbedConfig(model="simclr", input_size=32, num_workers=0, device="cpu"), model)
    assert emb.shape == (6, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    loaded = load_simclr_checkpoint(ckpt)
    emb2 = embed_samples(tmp_path, names, EmbedConfig(input_size=32, num_workers=0, device="cpu"), loaded)
    np.testing.assert_allclose(emb2, emb, atol=1e-6)


def test_train_config_from_lightly_config() -> None:
    cfg = TrainConfig.from_lightly_config(
        {
            "model": {"name": "resnet-34", "num_ftrs": 64, "width": 2},
            "loader": {"batch_size": 128, "num_workers": -1},
            "trainer": {"max_epochs": 5, "precision": 32},
            "optimizer": {"lr": 0.5},
            "criterion": {"temperature": 0.1},
            "collate": {"input_size": 128, "cj_prob": 0.5, "sigmas": [0.1, 1.0], "rr_degrees": None},
            "seed": 7,
        }
    )
    assert (cfg.model_name, cfg.num_ftrs, cfg.width, cfg.batch_size, cfg.max_epochs) == ("resnet-34", 64, 2, 128, 5)
    assert (cfg.lr, cfg.temperature, cfg.input_size, cfg.cj_prob, cfg.sigmas) == (0.5, 0.1, 128, 0.5, (0.1, 1.0))
    assert (cfg.precision, cfg.seed, cfg.out_dim) == ("fp32", 7, 128)
    assert TrainConfig.from_lightly_config(None) == TrainConfig()
    wire = TrainConfig.from_lightly(
        {"model": {"numFtrs": 16}, "trainer": {"maxEpochs": 3}, "collate": {"inputSize": 32, "randomGrayScale": 0.1}}
    )
    assert (wire.num_ftrs, wire.max_epochs, wire.input_size, wire.random_gray_scale) == (16, 3, 32, 0.1)


# ---------------------------------------------------------------------------------------------------------------
# videos (PyAV optional)


def make_video(path: Path, n: int, corrupt_tail: bool = False) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(n):
            arr = np.asarray(picture(1000 + i // 4, (64, 48)))
            for packet in stream.encode(__import__("av").VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.mark.skipif(not av_available(), reason="PyAV (av) not installed")
def test_video_frames(tmp_path: Path) -> None:
    make_video(tmp_path / "clips" / "cam.mp4", 12)
    write(tmp_path, "still.jpg", 5)
    names = list_samples(tmp_path)
    assert names == [f"clips/cam-{i:02d}-mp4.png" for i in range(12)] + ["still.jpg"]
    res = check_samples(tmp_path, names, corruption_threshold=0.1, log=log_())
    assert res.ok == names and not res.corrupt
    emb = embed_samples(tmp_path, names, EmbedConfig(input_size=64, batch_size=5, num_workers=0, device="cpu"))
    assert emb.shape == (13, 1280) and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    # frames 0-3 show the same picture: closer to each other than to frames of another picture
    d = np.linalg.norm(emb[:12] - emb[0], axis=1)
    assert d[1:4].max() < d[4:12].min()
    one = embed_samples(tmp_path, [names[6]], EmbedConfig(input_size=64, num_workers=0, device="cpu"))
    np.testing.assert_allclose(one[0], emb[6], atol=1e-4)

    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    assert list_samples(tmp_path) == names  # unreadable video: no frames, logged
