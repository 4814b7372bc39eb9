"""The official annotation formats: small trees in each dataset's layout, built here
(tiny videos with PyAV, frame folders with Pillow), read directly and through `vkd data`."""
import csv
import json

import numpy as np
import pytest

from vkd_kernels.train.cli import main as vkd
from vkd_kernels.train.data import build_dataset, formats

av = pytest.importorskip("av")


def write_video(path, frames=6, codec="mpeg4", size=32):
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for i in range(frames):
            image = np.full((size, size, 3), 30 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def write_frames(folder, n, template="{:05d}.jpg"):
    from PIL import Image
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((20, 20, 3), 20 * i, np.uint8)).save(folder / template.format(i + 1))


CLIP = dict(sampling="segments", num_segments=2, size=16, scale_size=16)


@pytest.fixture
def ucf(tmp_path):
    lists, videos = tmp_path / "ucfTrainTestlist", tmp_path / "UCF-101"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 Archery\r\n3 YoYo\r\n")
    names = {c: [f"{c}/v_{c}_g0{g}_c01.avi" for g in (1, 2, 3)] for c in ("ApplyEyeMakeup", "Archery", "YoYo")}
    for split in (1, 2, 3):           # split N tests on group N
        train = [f"{v} {i + 1}" for i, c in enumerate(names) for g, v in enumerate(names[c], 1) if g != split]
        test = [v for c in names for g, v in enumerate(names[c], 1) if g == split]
        (lists / f"trainlist0{split}.txt").write_text("\n".join(train) + "\n")
        (lists / f"testlist0{split}.txt").write_text("\n".join(test) + "\n")
    for c in names:
        for v in names[c]:
            write_video(videos / v, frames=4)
    return lists, videos


def test_ucf101_three_splits_read_directly_and_as_videos(ucf):
    lists, videos = ucf
    for split in (1, 2, 3):
        train = formats.read("ucf101", lists / f"trainlist0{split}.txt")
        test = formats.read("ucf101", lists / f"testlist0{split}.txt")
        assert train.classes == ["ApplyEyeMakeup", "Archery", "YoYo"]
        assert len(train.items) == 6 and len(test.items) == 3
        assert [label for *_, label in test.items] == [0, 1, 2]
        assert all(f"_g0{split}_" in p for p, _, _ in test.items)
        assert not any(f"_g0{split}_" in p for p, _, _ in train.items)
    frames = formats.read("ucf101", lists / "testlist01.txt", videos=False)
    assert frames.items[0] == ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01", -1, 0)
    cfg = dict(name="video", format="ucf101", root=str(videos), **CLIP,
               train={"annotations": str(lists / "trainlist01.txt")},
               val={"annotations": str(lists / "testlist01.txt")})
    ds = build_dataset(cfg, "val")
    assert ds.num_classes == 3 and len(ds) == 3
    clip, label = ds[2]
    assert clip.shape == (3, 2, 16, 16) and label == 2


def test_ucf101_errors_name_file_and_line(ucf, tmp_path):
    lists, _ = ucf
    bad = lists / "trainlist09.txt"
    bad.write_text("Archery/v_Archery_g01_c01.avi 2\nArchery/v_Archery_g02_c01.avi 7\n")
    with pytest.raises(ValueError, match=r"trainlist09.txt:2: class index '7'"):
        formats.read("ucf101", bad)
    bad.write_text("Archery/v_Archery_g01_c01.avi 1\n")
    with pytest.raises(ValueError, match=r"trainlist09.txt:1: .* is in folder Archery but has class 1"):
        formats.read("ucf101", bad)
    bad.write_text("Nope/v_Nope_g01_c01.avi\n")
    with pytest.raises(ValueError, match=r"trainlist09.txt:1: the folder of 'Nope/"):
        formats.read("ucf101", bad)
    alone = tmp_path / "elsewhere" / "trainlist01.txt"
    alone.parent.mkdir()
    alone.write_text("Archery/v_Archery_g01_c01.avi 2\n")
    with pytest.raises(ValueError, match="no class file .*classInd.txt"):
        formats.read("ucf101", alone)
    assert formats.read("ucf101", alone, classes=lists / "classInd.txt").items[0][2] == 1
    with pytest.raises(ValueError, match="annotations .*nothere.txt does not exist"):
        formats.read("ucf101", lists / "nothere.txt")


def test_hmdb51_markers_and_three_splits(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    for split in (1, 2, 3):
        for c in ("wave", "brush_hair"):    # sorted: brush_hair = 0, wave = 1
            lines = [f"{c}_{k}.avi {(k + split) % 3} " for k in range(6)]
            (splits / f"{c}_test_split{split}.txt").write_text("\n".join(lines) + "\n")
    for split in (1, 2, 3):
        train = formats.read("hmdb51", splits, split=split, train=True)
        test = formats.read("hmdb51", splits, split=split, train=False)
        assert train.classes == ["brush_hair", "wave"]
        assert sorted(p for p, _, _ in train.items) == sorted(
            f"{c}/{c}_{k}.avi" for c in ("brush_hair", "wave") for k in range(6) if (k + split) % 3 == 1)
        assert {p for p, _, _ in test.items} == {
            f"{c}/{c}_{k}.avi" for c in ("brush_hair", "wave") for k in range(6) if (k + split) % 3 == 2}
        assert dict((p, label) for p, _, label in test.items)[test.items[-1][0]] == 1
    (splits / "wave_test_split1.txt").write_text("wave_0.avi 1\nwave_1.avi 4\n")
    with pytest.raises(ValueError, match=r"wave_test_split1.txt:2: expected 'video.avi 0\|1\|2'"):
        formats.read("hmdb51", splits, split=1)
    with pytest.raises(ValueError, match="split must be 1, 2 or 3"):
        formats.read("hmdb51", splits, split=4)
    with pytest.raises(ValueError, match="must be the split folder"):
        formats.read("hmdb51", splits / "wave_test_split1.txt")


def _kinetics_csv(path, rows, header=("label", "youtube_id", "time_start", "time_end", "split")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def test_kinetics_csv_naming_and_missing_videos(tmp_path):
    root = tmp_path / "videos"
    write_video(root / "val" / "air drumming" / "abc_000010_000020.mp4")
    write_video(root / "val" / "zumba" / "def-_g_000003_000013.mkv")
    write_video(root / "ghi.mp4")                                   # the bare-id naming
    rows = [("air drumming", "abc", 10, 20, "val"), ("zumba", "def-_g", 3, 13, "val"),
            ("\"passing American football (in game)\"", "ghi", 0, 10, "val"),
            ("zumba", "lost", 5, 15, "val")]
    _kinetics_csv(tmp_path / "validate.csv", rows)
    found = formats.read("kinetics", tmp_path / "validate.csv", root=root)
    assert found.classes == ['"passing American football (in game)"', "air drumming", "zumba"]
    assert sorted(found.items) == sorted([("val/air drumming/abc_000010_000020.mp4", -1, 1),
                                          ("val/zumba/def-_g_000003_000013.mkv", -1, 2), ("ghi.mp4", -1, 0)])
    assert found.missing == ["lost_000005_000015"]
    cfg = dict(name="video", format="kinetics", root=str(root), annotations=str(tmp_path / "validate.csv"), **CLIP)
    with pytest.warns(UserWarning, match=r"kinetics: 1 of 4 videos listed in .*validate.csv.*lost_000005_000015"):
        ds = build_dataset(cfg, "val")
    assert len(ds) == 3 and ds[0][0].shape == (3, 2, 16, 16)
    classes = tmp_path / "classes.txt"
    classes.write_text("air drumming\nzumba\n")
    with pytest.raises(ValueError, match=r"validate.csv:4: label .*passing.* is not in .*classes.txt"):
        formats.read("kinetics", tmp_path / "validate.csv", root=root, classes=classes)
    _kinetics_csv(tmp_path / "test.csv", [("abc", 10, 20, "test")],
                  header=("youtube_id", "time_start", "time_end", "split"))
    with pytest.raises(ValueError, match=r"test.csv:1: no 'label' column"):
        formats.read("kinetics", tmp_path / "test.csv", root=root)
    _kinetics_csv(tmp_path / "bad.csv", [("zumba", "abc", "ten", 20, "val")])
    with pytest.raises(ValueError, match=r"bad.csv:2: expected label,youtube_id"):
        formats.read("kinetics", tmp_path / "bad.csv", root=root)


def test_ssv2_json_and_webm(tmp_path):
    labels = {"Holding something next to something": "1", "Pushing something from left to right": "0"}
    (tmp_path / "something-something-v2-labels.json").write_text(json.dumps(labels))
    entries = [{"id": "78687", "label": "holding potato next to a bottle",
                "template": "Holding [something] next to [something]", "placeholders": ["potato", "bottle"]},
               {"id": "42326", "label": "pushing a cup from left to right",
                "template": "Pushing [something] from left to right", "placeholders": ["a cup"]}]
    (tmp_path / "something-something-v2-train.json").write_text(json.dumps(entries))
    for entry in entries:
        write_video(tmp_path / "videos" / f"{entry['id']}.webm", codec="libvpx-vp9")
    cfg = dict(name="video", format="ssv2", root=str(tmp_path / "videos"),
               annotations=str(tmp_path / "something-something-v2-train.json"), flip=False, **CLIP)
    ds = build_dataset(cfg, "train")
    assert ds.items == [("78687.webm", -1, 1), ("42326.webm", -1, 0)]
    assert ds.classes == ["Pushing something from left to right", "Holding something next to something"]
    assert ds[1][0].shape == (3, 2, 16, 16)
    entries.append({"id": "1", "template": "Dropping [something]"})
    (tmp_path / "bad.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"bad.json: entry 3 \(id 1\): template 'Dropping something' is not in"):
        formats.read("ssv2", tmp_path / "bad.json", classes=tmp_path / "something-something-v2-labels.json")
    (tmp_path / "something-something-v2-test.json").write_text(json.dumps([{"id": "5"}]))
    with pytest.raises(ValueError, match="entry 1 .*no 'template'"):
        formats.read("ssv2", tmp_path / "something-something-v2-test.json")


def test_jester_csv_and_frame_folders(tmp_path):
    (tmp_path / "jester-v1-labels.csv").write_text("Swiping Left\nSwiping Right\nNo gesture\n")
    (tmp_path / "jester-v1-train.csv").write_text("34870;Swiping Right\n56557;No gesture\n")
    write_frames(tmp_path / "20bn-jester-v1" / "34870", 5)
    write_frames(tmp_path / "20bn-jester-v1" / "56557", 3)
    cfg = dict(name="frames", format="jester", root=str(tmp_path / "20bn-jester-v1"), template="{:05d}.jpg",
               annotations=str(tmp_path / "jester-v1-train.csv"), flip=False, **CLIP)
    ds = build_dataset(cfg, "val")
    assert ds.items == [("34870", -1, 1), ("56557", -1, 2)] and ds.num_classes == 3
    clip, label = ds[0]
    # 5 frames counted from the folder, 2 segment centres: frames 1 and 3 (brightness 20, 60)
    bright = (clip * 0.226 + 0.449).mean((0, 2, 3)) * 255
    assert label == 1 and np.allclose(bright.numpy(), [20, 60], atol=4)
    (tmp_path / "bad.csv").write_text("34870;Swiping Right\n99;Waving\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: label 'Waving' is not in .*jester-v1-labels.csv"):
        formats.read("jester", tmp_path / "bad.csv")
    (tmp_path / "bad.csv").write_text("34870\n")
    with pytest.raises(ValueError, match=r"bad.csv:1: expected 'id;label'"):
        formats.read("jester", tmp_path / "bad.csv")


def test_vkd_data_writes_lists_that_read_back(ucf, tmp_path, capsys):
    lists, videos = ucf
    out = tmp_path / "out" / "ucf101_val_split_1_videos.txt"
    assert vkd(["data", "--format", "ucf101", "--annotations", str(lists / "testlist01.txt"), "--out", str(out)]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts == {"written": 3, "missing": 0, "empty": 0, "classes": 3}
    direct = formats.read("ucf101", lists / "testlist01.txt")
    assert formats.read("list", out).items == direct.items
    assert (tmp_path / "out" / "ucf101_val_split_1_videos.txt.classes.txt").read_text().split() == direct.classes
    # frame folders: num_frames counted, an empty folder left out and counted
    frames = tmp_path / "rawframes"
    write_frames(frames / "YoYo" / "v_YoYo_g01_c01", 7, "img_{:05d}.jpg")
    write_frames(frames / "Archery" / "v_Archery_g01_c01", 2, "img_{:05d}.jpg")
    out = tmp_path / "frames.txt"
    vkd(["data", "--format", "ucf101", "--annotations", str(lists / "testlist01.txt"), "--root", str(frames),
         "--frames", "--out", str(out)])
    assert json.loads(capsys.readouterr().out)["empty"] == 1
    assert out.read_text() == "Archery/v_Archery_g01_c01 2 1\nYoYo/v_YoYo_g01_c01 7 2\n"
    # kinetics: the missing videos are listed beside the list
    _kinetics_csv(tmp_path / "train.csv", [("zumba", "abc", 1, 11, "train"), ("zumba", "gone", 1, 11, "train")])
    write_video(tmp_path / "k" / "abc_000001_000011.mp4")
    out = tmp_path / "k400.txt"
    vkd(["data", "--format", "kinetics", "--annotations", str(tmp_path / "train.csv"), "--root", str(tmp_path / "k"),
         "--out", str(out)])
    counts = json.loads(capsys.readouterr().out)
    assert counts["written"] == 1 and counts["missing"] == 1
    assert (tmp_path / "k400.txt.missing.txt").read_text() == "gone_000001_000011\n"
    # a path with a space cannot go into our whitespace-separated lists: named
    write_video(tmp_path / "k" / "air drumming" / "sp_000001_000011.mp4")
    _kinetics_csv(tmp_path / "train.csv", [("air drumming", "sp", 1, 11, "train")])
    # (the command's errors are one line on stderr, exit status 2, as every vkd subcommand's)
    assert vkd(["data", "--format", "kinetics", "--annotations", str(tmp_path / "train.csv"), "--root",
                str(tmp_path / "k"), "--out", str(out)]) == 2
    assert "path 'air drumming/sp_000001_000011.mp4' has whitespace" in capsys.readouterr().err
    with pytest.raises(formats.DataError, match="path 'air drumming/sp_000001_000011.mp4' has whitespace"):
        formats.write_list(formats.read("kinetics", tmp_path / "train.csv", root=tmp_path / "k"), out)


def test_label_outside_num_classes_is_rejected(ucf):
    lists, videos = ucf
    cfg = dict(name="video", format="ucf101", root=str(videos), annotations=str(lists / "testlist01.txt"),
               num_classes=2, **CLIP)
    with pytest.raises(ValueError,
                       match=r"testlist01.txt: label 2 of YoYo/v_YoYo_g01_c01.avi is outside num_classes=2"):
        build_dataset(cfg, "val")


def test_real_data_recipes_read_the_official_layouts(tmp_path, monkeypatch):
    """Each real-data recipe, unchanged but for sizes, builds its val split from a tiny
    tree in the official layout at the recipe's paths."""
    from vkd_kernels.train.config import load_recipe
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "data"
    (d / "ucf101/ucfTrainTestlist").mkdir(parents=True)
    (d / "ucf101/ucfTrainTestlist/classInd.txt").write_text("1 Archery\n")
    (d / "ucf101/ucfTrainTestlist/testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    write_video(d / "ucf101/UCF-101/Archery/v_Archery_g01_c01.avi", frames=8)
    (d / "hmdb51/testTrainMulti_7030_splits").mkdir(parents=True)
    (d / "hmdb51/testTrainMulti_7030_splits/wave_test_split1.txt").write_text("w0.avi 2\nw1.avi 1\n")
    write_video(d / "hmdb51/videos/wave/w0.avi", frames=8)
    (d / "kinetics400/annotations").mkdir(parents=True)
    _kinetics_csv(d / "kinetics400/annotations/validate.csv", [("zumba", "abc", 1, 11, "val")])
    write_video(d / "kinetics400/videos/val/zumba/abc_000001_000011.mp4", frames=8)
    (d / "sthv2/labels").mkdir(parents=True)
    (d / "sthv2/labels/something-something-v2-labels.json").write_text(json.dumps({"Dropping something": "0"}))
    (d / "sthv2/labels/something-something-v2-validation.json").write_text(
        json.dumps([{"id": "7", "template": "Dropping [something]"}]))
    write_video(d / "sthv2/20bn-something-something-v2/7.webm", frames=8, codec="libvpx-vp9")
    (d / "jester").mkdir()
    (d / "jester/jester-v1-labels.csv").write_text("No gesture\n")
    (d / "jester/jester-v1-validation.csv").write_text("9;No gesture\n")
    write_frames(d / "jester/20bn-jester-v1/9", 8)
    small = ["data.size=16", "data.scale_size=16", "data.clip_len=4", "data.num_classes=null"]
    for name in ("ucf101-i3d", "hmdb51-i3d", "kinetics400-tsm", "ssv2-tsm", "jester-tsm"):
        recipe = load_recipe(name, small)
        assert recipe["data"]["format"] in formats.FORMATS
        ds = build_dataset(recipe["data"], "val")
        clip, label = ds[0]
        assert len(ds) == 1 and label == 0 and clip.shape[0] == 3 and clip.shape[-2:] == (16, 16), name


def test_official_formats_go_through_the_source_checks(ucf, tmp_path):
    """The official formats meet the same construction checks as our lists: a missing root,
    annotation file or hmdb51 split folder, a root holding none of the listed videos, and a
    kinetics CSV none of whose videos is under root are each named before any sample is read."""
    from vkd_kernels.train.data import DataError
    lists, videos = ucf
    cfg = dict(name="video", format="ucf101", root=str(videos), annotations=str(lists / "testlist01.txt"), **CLIP)
    with pytest.raises(DataError, match=r"root: no folder '.*nowhere'.*data.root"):
        build_dataset({**cfg, "root": str(tmp_path / "nowhere")}, "val")
    with pytest.raises(DataError, match=r"annotations: no file '.*testlist09.txt' \(the official ucf101 file\)"):
        build_dataset({**cfg, "annotations": str(lists / "testlist09.txt")}, "val")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"root: none of the first 3 listed samples exists under '.*empty'"):
        build_dataset({**cfg, "root": str(tmp_path / "empty")}, "val")
    with pytest.raises(DataError, match=r"annotations: no folder '.*splits' \(the official split folder"):
        build_dataset({**cfg, "format": "hmdb51", "annotations": str(tmp_path / "splits")}, "val")
    _kinetics_csv(tmp_path / "k.csv", [("zumba", "gone", 1, 11, "val")])
    with pytest.raises(DataError, match=r"root: none of the 1 videos listed in '.*k.csv' is under"):
        build_dataset({**cfg, "format": "kinetics", "annotations": str(tmp_path / "k.csv")}, "val")
    (lists / "testlist02.txt").write_text("Nope/v_Nope_g01_c01.avi\n")       # a reader's error is a DataError
    with pytest.raises(DataError, match=r"testlist02.txt:1: the folder of 'Nope/"):
        build_dataset({**cfg, "annotations": str(lists / "testlist02.txt")}, "val")


def test_recipe_schema_types_the_format_keys():
    """data.format must be one of the readers, split an integer, classes a path (string)."""
    from vkd_kernels.train.config import ConfigError, load_recipe
    recipe = load_recipe("hmdb51-i3d", ["data.split=2", "data.classes=/some/classInd.txt"])
    assert recipe["data"]["split"] == 2
    for override, error in (("data.format=ucf102", r"data.format: expected one of 'list', 'ucf101', 'hmdb51'"),
                            ("data.split=one", r"data.split: expected an integer, got 'one'"),
                            ("data.val.classes=3", r"data.val.classes: expected a string or null, got 3"),
                            ("data.fromat=ucf101", r"data.fromat: unknown key \(did you mean 'format'\?\)")):
        with pytest.raises(ConfigError, match=error):
            load_recipe("ucf101-i3d", [override])
