"""The QGIS plugin in a real, headless QGIS (Debian's python3-qgis, ``QT_QPA_PLATFORM=offscreen``).

What a geologist does, end to end: the plugin loads through ``classFactory``; the Processing
algorithm maps the sample scene and the real HiRISE scene into valid layers in the scene's Mars CRS,
styled with the model's classes; the button's background task works on a Mars layer loaded first
into an empty project; cancelling mid-run and failing both leave no files; QGIS's own Python without
momo-geo gets one clear install message; ``qgis_process`` runs the algorithm from the shell; the
plugin zip builds clean. Screenshots of the dialog and the map are rendered here (into
``$MOMO_GEO_SCREENSHOTS`` when set, e.g. ``docs/img``, else into a temporary folder).
"""

from __future__ import annotations

import configparser
import inspect
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
qgis_core = pytest.importorskip("qgis.core", reason="needs Debian's python3-qgis")

from qgis_support import (  # noqa: E402
    PLUGIN_PARENT,
    ROOT,
    Interface,
    make_dark_spot_bundle,
    run_script_report,
    wait_for,
)

pytestmark = pytest.mark.qgis
SAMPLE_SCENE = ROOT / "sample_data" / "crater_field.tif"
ALGORITHM = "momo-geo:mapmarsfeatures"
CRATER_ORANGE = "#ff7f0e"


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def qgis_app():
    from qgis.core import QgsApplication, QgsProject
    from qgis.testing import start_app

    app = start_app()
    processing_path = str(Path(QgsApplication.pkgDataPath()) / "python" / "plugins")
    if processing_path not in sys.path:
        sys.path.append(processing_path)
    from processing.core.Processing import Processing

    Processing.initialize()
    if str(PLUGIN_PARENT) not in sys.path:
        sys.path.insert(0, str(PLUGIN_PARENT))
    yield app
    # Layers and GDAL datasets must go before the interpreter exits, or QGIS segfaults at exit.
    QgsProject.instance().removeAllMapLayers()
    QgsProject.instance().clear()


@pytest.fixture(scope="module")
def iface(qgis_app) -> Interface:
    return Interface()


@pytest.fixture(scope="module")
def plugin(iface):
    import momo_geo_plugin

    plugin = momo_geo_plugin.classFactory(iface)
    plugin.initGui()
    yield plugin
    plugin.unload()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_dark_spot_bundle(tmp_path_factory.mktemp("model") / "tiny.bundle")


@pytest.fixture(scope="module")
def sample_scene() -> Path:
    if not SAMPLE_SCENE.is_file():
        pytest.skip(f"{SAMPLE_SCENE} missing (engineer A's sample scene; `make demo` needs it)")
    return SAMPLE_SCENE


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    target = os.environ.get("MOMO_GEO_SCREENSHOTS")
    if target:
        path = Path(target).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


def run_and_load(plugin, scene: Path, bundle: Path, out: Path, **extra) -> dict:
    """Run the algorithm as the Processing toolbox does: outputs loaded and post-processed."""
    import processing
    from qgis.core import QgsProcessingFeedback

    parameters = {"scene": str(scene), "model": str(bundle), "mask_path": str(out / "mask.tif"),
                  "vector_path": str(out / "features.gpkg"), "batch_size": 32, **extra}
    return processing.runAndLoadResults(ALGORITHM, parameters, feedback=QgsProcessingFeedback())


def project_layer(name: str):
    from qgis.core import QgsProject

    layers = QgsProject.instance().mapLayersByName(name)
    assert len(layers) == 1, f"expected one layer named {name!r}, got {len(layers)}"
    return layers[0]


def check_mars_crs(layer, scene: Path) -> None:
    """Valid, shown with a description (not empty, as QGIS 3.22 does for bare IAU codes), and
    the scene's own Mars CRS."""
    from qgis.core import QgsRasterLayer

    crs = layer.crs()
    assert crs.isValid()
    assert crs.description().strip(), f"{layer.source()}: QGIS shows an empty CRS description"
    assert "mars" in (crs.description() + crs.toWkt()).lower()
    reference = QgsRasterLayer(str(scene), "reference")
    try:
        # The same projection on the same body (names may differ: QGIS names the scene by the
        # IAU code it recognised, the output by the WKT the engine wrote).
        assert proj_terms(crs) == proj_terms(reference.crs())
    finally:
        del reference


def proj_terms(crs) -> set[str]:
    return set(crs.toProj().split()) - {"+type=crs", "+no_defs"}


def check_styles(mask, features, card_classes: list[dict]) -> None:
    from qgis.core import QgsCategorizedSymbolRenderer, QgsPalettedRasterRenderer

    renderer = mask.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    entries = {c.value: (c.label, c.color) for c in renderer.classes()}
    assert sorted(entries) == [c["id"] for c in card_classes]
    for c in card_classes:
        label, color = entries[c["id"]]
        assert label == c["name"]
        assert color.name() == c["color"]
    assert entries[0][1].alpha() == 0  # background transparent: the scene stays visible
    categorized = features.renderer()
    assert isinstance(categorized, QgsCategorizedSymbolRenderer)
    assert categorized.classAttribute() == "class_name"
    categories = {cat.value(): cat for cat in categorized.categories()}
    assert set(categories) == {"crater"}
    assert categories["crater"].label() == "crater"
    assert categories["crater"].symbol().symbolLayer(0).strokeColor().name() == CRATER_ORANGE


# --------------------------------------------------------------------------------------------
# loading, metadata, dependencies


def test_metadata_declares_what_the_plugin_repository_needs():
    import momo_geo

    meta = configparser.ConfigParser()
    meta.read(PLUGIN_PARENT / "momo_geo_plugin" / "metadata.txt")
    general = meta["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author",
                "email", "repository", "tracker", "homepage", "icon"):
        assert general.get(key, "").strip(), f"metadata.txt lacks {key}"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["qgisMaximumVersion"] == "4.99"
    assert general["version"] == momo_geo.__version__
    assert general["hasProcessingProvider"] == "yes"
    assert (PLUGIN_PARENT / "momo_geo_plugin" / general["icon"]).is_file()


def test_plugin_loads_via_class_factory(plugin, iface):
    from qgis.core import QgsApplication

    from momo_geo.inference.options import MapOptions

    assert plugin.dependencies is not None and plugin.dependencies.ok
    actions = iface.toolbar.actions()
    assert [a.text() for a in actions] == ["Map Mars features"]
    assert actions[0].isEnabled()
    assert not actions[0].icon().isNull()
    assert [a.text() for a in iface.submenus["&momo-geo"].actions()] == [
        "Map Mars features", "Python environment…", "Install momo-geo…"]
    registry = QgsApplication.processingRegistry()
    assert registry.providerById("momo-geo") is not None
    algorithm = registry.algorithmById(ALGORITHM)
    assert algorithm is not None and algorithm.displayName() == "Map Mars features"
    # map_scene's own parameters, then every MapOptions field, overwrite included (off by
    # default: qgis_process, batch mode and Model Builder never ask before replacing a file).
    names = [p.name() for p in algorithm.parameterDefinitions()]
    assert names == ["scene", "model", "mask_path", "vector_path",
                     *MapOptions.__dataclass_fields__]
    assert algorithm.parameterDefinition("overwrite").defaultValue() is False
    # Batch mode and Model Builder: batch support, can cancel, usable as a model's child step.
    flags = algorithm.flags()
    assert flags & algorithm.FlagSupportsBatch and flags & algorithm.FlagCanCancel
    assert not flags & algorithm.FlagNoThreading
    from qgis.core import QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm

    model = QgsProcessingModelAlgorithm("map craters", "momo-geo")
    child = QgsProcessingModelChildAlgorithm(ALGORITHM)
    model.addChildAlgorithm(child)
    assert child.algorithm() is not None and model.childAlgorithms()


def test_qgis_python_without_momo_geo_gets_one_install_message(tmp_path):
    """QGIS's own interpreter (Debian's /usr/bin/python3) without momo-geo or torch on its path:
    the plugin loads, disables itself and says exactly how to install them."""
    python = Path("/usr/bin/python3")
    if not python.is_file():
        pytest.skip("no system Python 3 (QGIS's interpreter) at /usr/bin/python3")
    script = f"""
import json, os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
sys.path[:0] = [{str(PLUGIN_PARENT)!r}, {str(Path(__file__).parent)!r}]
try:
    import momo_geo  # noqa
    print(json.dumps({{"skip": "momo_geo importable in system Python"}})); sys.exit(0)
except ImportError:
    pass
from qgis.testing import start_app
start_app()
from qgis.core import QgsApplication
from qgis_support import Interface
import momo_geo_plugin
iface = Interface()
plugin = momo_geo_plugin.classFactory(iface)
plugin.initGui()
action = iface.toolbar.actions()[0]
print(json.dumps({{"enabled": action.isEnabled(), "messages": iface.messages(),
                  "provider": QgsApplication.processingRegistry().providerById("momo-geo")
                  is not None, "python": sys.executable}}))
plugin.unload()
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HOME"] = str(tmp_path)
    # The engine's Python set to one without momo-geo (else the checkout's .venv is detected).
    env["MOMO_GEO_PYTHON"] = str(python)
    report = run_script_report(python, script, env, tmp_path, timeout=60)
    assert report["enabled"] is False and report["provider"] is False
    assert len(report["messages"]) == 1, report["messages"]
    message = report["messages"][0]
    assert "momo_geo" in message and str(python) in message and "\n" not in message
    assert "Install momo-geo" in message and "python3 -m venv" in message
    assert f"pip install {ROOT}" in message  # from a checkout: the checkout is the source


def test_qgis_python_is_the_python_behind_the_qgis_binary(qgis_app, tmp_path):
    """On Linux QGIS's sys.executable is the qgis binary; the fallback engine and the managed
    venv use the matching python."""
    from momo_geo_plugin.deps import qgis_python

    fake_qgis = tmp_path / "bin" / "qgis"
    fake_qgis.parent.mkdir()
    fake_qgis.write_text("")
    python = qgis_python(str(fake_qgis))
    assert Path(python).is_file(), python
    # A python3 elsewhere (a pyenv shim first on PATH) is not QGIS's interpreter either.
    assert qgis_python(str(tmp_path / "shims" / "python3")) == python
    # Inside a plain Python or a virtual environment, sys.executable is the one.
    assert qgis_python(sys.executable) == sys.executable
    version = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == str(tuple(sys.version_info[:2]))


# --------------------------------------------------------------------------------------------
# the Processing algorithm


@pytest.fixture(scope="module")
def sample_run(plugin, sample_scene, bundle, tmp_path_factory):
    from qgis.core import QgsProject

    QgsProject.instance().clear()
    out = tmp_path_factory.mktemp("sample_run")
    results = run_and_load(plugin, sample_scene, bundle, out)
    return results, out


def test_processing_maps_the_sample_scene_into_styled_mars_layers(sample_run, sample_scene):
    import numpy as np
    import rasterio
    from qgis_support import CLASSES

    results, out = sample_run
    assert Path(results["mask_path"]) == out / "mask.tif"
    assert results["features"] > 0
    mask, features = project_layer("tiny-test mask"), project_layer("tiny-test features")
    for layer in (mask, features):
        assert layer.isValid()
        check_mars_crs(layer, sample_scene)
    check_styles(mask, features, CLASSES)
    assert features.featureCount() == results["features"]
    assert {f["class_name"] for f in features.getFeatures()} == {"crater"}
    with rasterio.open(sample_scene) as src, rasterio.open(results["mask_path"]) as mask_src:
        assert mask_src.shape == src.shape and mask_src.transform == src.transform
        crater = mask_src.read(1) == 1
        dark = src.read(1) < np.percentile(src.read(1)[src.read_masks(1) > 0], 25)
    # The dark-spot model marks dark pixels: craters' shadowed walls, not the whole scene.
    assert 0.01 < crater.mean() < 0.6
    assert (crater & dark).sum() > 0.5 * crater.sum()


def test_processing_maps_the_real_hirise_scene(plugin, hirise_scene, bundle, tmp_path):
    from qgis.core import QgsProject
    from qgis_support import CLASSES

    QgsProject.instance().clear()
    results = run_and_load(plugin, hirise_scene, bundle, tmp_path, min_area=2000.0)
    mask, features = project_layer("tiny-test mask"), project_layer("tiny-test features")
    for layer in (mask, features):
        assert layer.isValid()
        check_mars_crs(layer, hirise_scene)
    assert mask.width() == 274 and mask.height() == 661
    check_styles(mask, features, CLASSES)
    areas = [f["area_m2"] for f in features.getFeatures()]
    assert areas and min(areas) >= 2000.0
    assert results["features"] == len(areas)
    QgsProject.instance().clear()


def test_processing_cancel_mid_run_leaves_no_files(plugin, sample_scene, bundle, tmp_path):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    seen = []

    def cancel_after_first_batches(percent: float) -> None:
        seen.append(percent)
        if percent > 5:
            feedback.cancel()

    feedback.progressChanged.connect(cancel_after_first_batches)
    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing.run(ALGORITHM, {
            "scene": str(sample_scene), "model": str(bundle), "batch_size": 2,
            "mask_path": str(tmp_path / "mask.tif"),
            "vector_path": str(tmp_path / "features.gpkg")}, feedback=feedback)
    assert seen and max(seen) < 100, "the run finished although it was cancelled"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_processing_replaces_only_with_overwrite_and_never_a_folder(plugin, sample_scene,
                                                                    bundle, tmp_path):
    """qgis_process, batch mode and Model Builder never ask before replacing a file: the
    overwrite parameter (default off) decides, and even with it a folder is never replaced."""
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    mask, vector = tmp_path / "mask.tif", tmp_path / "features.gpkg"
    mask.write_bytes(b"precious")
    parameters = {"scene": str(sample_scene), "model": str(bundle), "batch_size": 32,
                  "mask_path": str(mask), "vector_path": str(vector)}
    with pytest.raises(QgsProcessingException, match="mask.tif exists; pass --overwrite"):
        processing.run(ALGORITHM, parameters, feedback=QgsProcessingFeedback())
    assert mask.read_bytes() == b"precious" and not vector.exists()
    folder = tmp_path / "maps.tif"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(QgsProcessingException, match="is a folder"):
        processing.run(ALGORITHM, {**parameters, "mask_path": str(folder), "overwrite": True},
                       feedback=QgsProcessingFeedback())
    assert (folder / "notes.txt").read_text() == "keep me"
    processing.run(ALGORITHM, {**parameters, "overwrite": True}, feedback=QgsProcessingFeedback())
    assert mask.read_bytes()[:4] == b"II*\x00" and vector.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.gpkg", "maps.tif", "mask.tif"]


# --------------------------------------------------------------------------------------------
# the button: dialog + background task


def test_dialog_defaults_card_and_warnings(plugin, iface, sample_scene, hirise_scene, bundle,
                                           tmp_path, screenshots, monkeypatch):
    from qgis.core import QgsProject, QgsRasterLayer
    from qgis.PyQt.QtWidgets import QDialogButtonBox

    from momo_geo_plugin.dialog import MapFeaturesDialog

    project = QgsProject.instance()
    project.clear()
    scene_layer = QgsRasterLayer(str(sample_scene), "crater_field")
    project.addMapLayer(scene_layer)
    iface.active_layer = scene_layer
    dialog = MapFeaturesDialog(iface.window, iface=iface)
    # Relative paths (from a working folder) keep this machine's paths out of the screenshot.
    monkeypatch.chdir(tmp_path)
    shutil.copytree(bundle, tmp_path / "tiny-test.bundle")
    dialog.model_file.setFilePath("tiny-test.bundle")
    assert dialog.scene_path() == str(sample_scene)
    assert dialog.mask_file.filePath() == str(sample_scene.with_name("crater_field_mask.tif"))
    assert dialog.vector_file.filePath().endswith("crater_field_features.gpkg")
    assert (dialog.tile.value(), dialog.overlap.value()) == (64, 8)  # the card's defaults
    card_text = dialog.card_label.text()
    for expected in ("tiny-test", "crater", "background", "Ctx", "4–30 m/px"):
        assert expected.lower() in card_text.lower(), card_text
    dialog.vector_format.setCurrentText("ESRI Shapefile")
    assert dialog.vector_file.filePath().endswith("crater_field_features.shp")
    dialog.vector_format.setCurrentText("GeoPackage")
    assert dialog.warning_label.text() == ""  # CTX-like 6 m/px scene fits the model
    dialog.mask_file.setFilePath("crater_field_mask.tif")
    dialog.vector_file.setFilePath("crater_field_features.gpkg")
    request = dialog.request()
    assert (request.scene, request.model) == (str(sample_scene), "tiny-test.bundle")
    assert (request.options["tile"], request.options["batch_size"]) == (64, 8)
    # The Processing algorithm's options are in the dialog too, at the engine's defaults.
    assert (dialog.precision.currentText(), dialog.blend.currentText()) == ("fp32", "crop")
    assert (dialog.simplify.value(), dialog.circles.isChecked()) == (0.0, False)
    dialog.blend.setCurrentText("smooth")
    dialog.circles.setChecked(True)
    assert {k: dialog.request().options[k] for k in ("blend", "circles")} == {
        "blend": "smooth", "circles": True}
    dialog.tile.setValue(32)
    dialog.reset_tiling.click()
    assert (dialog.blend.currentText(), dialog.circles.isChecked()) == ("crop", False)
    assert dialog.tile.value() == 64  # the card's, not the engine's "None"
    run_button = dialog.buttons.button(QDialogButtonBox.Ok)
    assert run_button.isEnabled()
    dialog.resize(640, dialog.sizeHint().height())
    dialog.show()
    assert dialog.grab().save(str(screenshots / "qgis_dialog.png"))

    # A HiRISE scene at 25 m/px with a CTX-only model trained for 4-8 m/px: both warnings.
    ctx_only = make_dark_spot_bundle(tmp_path / "ctx.bundle", sensors=("ctx",),
                                     gsd_range=(4.0, 8.0))
    dialog.model_file.setFilePath(str(ctx_only))
    dialog.scene_file.setFilePath(str(hirise_scene))
    warning = dialog.warning_label.text()
    assert "HiRISE" in warning and "25" in warning and "4–8 m/px" in warning
    # An existing output blocks Run until "replace" is ticked.
    dialog.mask_file.setFilePath(str(sample_scene))
    assert not run_button.isEnabled() and "exists" in dialog.warning_label.text()
    dialog.overwrite.setChecked(True)
    assert run_button.isEnabled()
    dialog.close()
    project.clear()


def test_task_on_mars_layer_loaded_first_in_empty_project(plugin, iface, hirise_scene, bundle,
                                                          tmp_path):
    from qgis.core import QgsProject, QgsRasterLayer

    from momo_geo_plugin.dialog import MapFeaturesDialog

    project = QgsProject.instance()
    project.clear()
    assert not project.crs().isValid()
    scene_layer = QgsRasterLayer(str(hirise_scene), "ESP_037156_1800_RED")
    project.addMapLayer(scene_layer)
    wait_for(lambda: project.crs().isValid(), timeout=10)  # the canvas bridge sets it (deferred)
    assert project.crs() == scene_layer.crs() and project.crs().description()
    iface.active_layer = scene_layer
    dialog = MapFeaturesDialog(iface.window, iface=iface)
    dialog.model_file.setFilePath(str(bundle))
    dialog.mask_file.setFilePath(str(tmp_path / "hirise_mask.tif"))
    dialog.vector_file.setFilePath(str(tmp_path / "hirise_features.gpkg"))
    request = dialog.request()
    dialog.close()
    assert request.scene == str(hirise_scene)
    iface.bar.clearWidgets()
    task = plugin.start(request)
    wait_for(lambda: task not in plugin.tasks)
    assert task.outcome == "complete", task.error
    assert len(task.layers) == 2
    for layer in task.layers:
        assert project.mapLayer(layer.id()) is layer
        assert layer.isValid() and layer.crs().description()
        assert proj_terms(layer.crs()) == proj_terms(scene_layer.crs())
        assert scene_layer.extent().intersects(layer.extent())
    assert project.crs() == scene_layer.crs()
    assert any(m.startswith("Mapped ") for m in iface.messages()), iface.messages()
    project.clear()


def test_task_cancel_mid_run_leaves_no_files(plugin, iface, sample_scene, bundle, tmp_path):
    from momo_geo_plugin.client import MapRequest

    request = MapRequest(scene=str(sample_scene), model=str(bundle), options={"batch_size": 1},
                         mask_path=str(tmp_path / "mask.tif"),
                         vector_path=str(tmp_path / "features.gpkg"))
    iface.bar.clearWidgets()
    task = plugin.start(request)
    progress = []

    def cancel_once_running(percent: float) -> None:
        progress.append(percent)
        if percent > 2 and not task.isCanceled():
            task.cancel()

    task.progressChanged.connect(cancel_once_running)
    wait_for(lambda: task not in plugin.tasks)
    assert task.outcome == "cancelled"
    assert progress and max(progress) < 100, "the run finished although it was cancelled"
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert task.layers == []
    assert any("cancelled" in m for m in iface.messages()), iface.messages()


@pytest.mark.parametrize("broken", ["model", "scene"])
def test_task_failure_shows_a_message_and_writes_nothing(plugin, iface, sample_scene, bundle,
                                                         tmp_path, broken):
    from momo_geo_plugin.client import MapRequest

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    scene, model = sample_scene, bundle
    if broken == "model":
        model = inputs / "missing.bundle"
        expected = "missing.bundle"
    else:  # a file that is not a raster: fails inside the worker process
        scene = inputs / "notes.tif"
        scene.write_text("not a raster")
        expected = "notes.tif"
    out = tmp_path / "out"
    out.mkdir()
    request = MapRequest(scene=str(scene), model=str(model), mask_path=str(out / "mask.tif"),
                         vector_path=str(out / "features.gpkg"))
    iface.bar.clearWidgets()
    task = plugin.start(request)
    wait_for(lambda: task not in plugin.tasks)
    assert task.outcome == "failed"
    messages = iface.messages()
    assert len(messages) == 1 and "failed" in messages[0] and expected in messages[0], messages
    assert "Traceback" not in messages[0] and "\n" not in messages[0]
    assert sorted(p.name for p in out.iterdir()) == []


# --------------------------------------------------------------------------------------------
# the map screenshot, qgis_process, packaging


def test_map_canvas_renders_scene_and_both_layers(sample_run, sample_scene, bundle, screenshots,
                                                  tmp_path):
    from qgis.core import (
        QgsMapRendererSequentialJob,
        QgsMapSettings,
        QgsRasterLayer,
        QgsRectangle,
    )
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    from momo_geo.bundle import resolve_bundle_path
    from momo_geo_plugin.client import load_card
    from momo_geo_plugin.styling import load_styled_layers

    results, _ = sample_run
    model = str(bundle)
    if os.environ.get("MOMO_GEO_SCREENSHOTS"):
        # Pictures for the README: with the bundled crater model when it is installed.
        try:
            model = str(resolve_bundle_path("default"))
        except Exception:
            model = str(bundle)
    if model != str(bundle):
        from momo_geo.inference import map_scene

        results = {"mask_path": str(tmp_path / "mask.tif"),
                   "vector_path": str(tmp_path / "features.gpkg")}
        map_scene(sample_scene, results["mask_path"], results["vector_path"], model)
    card = load_card(model)
    mask, features = load_styled_layers(results["mask_path"], results["vector_path"], card)
    scene_layer = QgsRasterLayer(str(sample_scene), "crater_field")
    settings = QgsMapSettings()
    settings.setLayers([features, mask, scene_layer])  # top first
    settings.setDestinationCrs(scene_layer.crs())
    extent = scene_layer.extent()
    # A 2 km x 2 km window so individual crater outlines are visible in the README.
    centre = extent.center()
    half = 1000.0
    settings.setExtent(QgsRectangle(centre.x() - half, centre.y() - half,
                                    centre.x() + half, centre.y() + half))
    settings.setOutputSize(QSize(720, 720))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    assert not job.errors()
    assert image.save(str(screenshots / "qgis_map.png"))
    # Feature outlines are drawn opaque in the first feature class's colour (orange for craters).
    target = QColor(next(c.color for c in card.classes if not c.background))

    def outline_colour(pixel: int) -> bool:
        c = QColor(pixel)
        return max(abs(c.red() - target.red()), abs(c.green() - target.green()),
                   abs(c.blue() - target.blue())) < 40

    oranges = sum(1 for x in range(0, 720, 2) for y in range(0, 720, 2)
                  if outline_colour(image.pixel(x, y)))
    assert oranges > 20, "crater outlines in the class colour are not on the rendered map"
    del mask, features, scene_layer, job


def _qgis_process() -> str | None:
    # Debian's /usr/bin/qgis_process wrapper passes --noversioncheck, which the 3.22 binary
    # refuses; the real executable is qgis_process.bin beside it.
    for name in ("qgis_process.bin", "qgis_process"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _qgis_process_env(tmp_path: Path) -> dict[str, str]:
    # QGIS's Python is the system interpreter, without momo-geo; the plugin finds the engine's
    # Python itself (here: the checkout's .venv, as the plugin is loaded from the checkout).
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MOMO_GEO_PYTHON")}
    env.update({
        "QT_QPA_PLATFORM": "offscreen",
        "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path / "profile"),
        "QGIS_PLUGINPATH": str(PLUGIN_PARENT),
    })
    return env


def test_qgis_process_runs_the_algorithm_from_the_shell(sample_scene, bundle, tmp_path):
    executable = _qgis_process()
    if executable is None:
        pytest.skip("qgis_process not installed (Debian package `qgis`)")
    env = _qgis_process_env(tmp_path)
    enable = subprocess.run([executable, "plugins", "enable", "momo_geo_plugin"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert enable.returncode == 0, enable.stdout[-2000:] + enable.stderr[-2000:]
    mask, vector = tmp_path / "mask.tif", tmp_path / "craters.shp"
    completed = subprocess.run(
        [executable, "--json", "run", ALGORITHM, "--", f"scene={sample_scene}",
         f"model={bundle}", f"mask_path={mask}", f"vector_path={vector}", "batch_size=32",
         "min_area=5000"],
        capture_output=True, text=True, env=env, timeout=180)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    payload = json.loads(completed.stdout[completed.stdout.index("{"):])
    assert payload["results"]["features"] > 0
    assert mask.is_file() and vector.is_file()
    assert {p.suffix for p in tmp_path.glob("craters.*")} >= {".shp", ".shx", ".dbf", ".prj"}


def test_qgis_process_without_momo_geo_says_how_to_install_it(sample_scene, tmp_path):
    executable = _qgis_process()
    if executable is None:
        pytest.skip("qgis_process not installed (Debian package `qgis`)")
    env = {**_qgis_process_env(tmp_path), "MOMO_GEO_PYTHON": "/usr/bin/python3"}
    subprocess.run([executable, "plugins", "enable", "momo_geo_plugin"], capture_output=True,
                   text=True, env=env, timeout=120)
    completed = subprocess.run(
        [executable, "run", ALGORITHM, "--", f"scene={sample_scene}",
         f"mask_path={tmp_path / 'm.tif'}", f"vector_path={tmp_path / 'v.gpkg'}"],
        capture_output=True, text=True, env=env, timeout=120)
    assert completed.returncode != 0
    hints = [line for line in (completed.stdout + completed.stderr).splitlines()
             if "momo-geo plugin disabled" in line]
    assert len(hints) == 1 and "pip install" in hints[0] and "MOMO_GEO_PYTHON" in hints[0]


def test_plugin_zip_builds_clean_and_the_security_scan_can_fail(tmp_path):
    sys.path.insert(0, str(PLUGIN_PARENT))
    import package_plugin
    import security_check

    import momo_geo

    target = package_plugin.build(tmp_path / "dist")
    assert target.name == f"momo_geo_plugin-{momo_geo.__version__}.zip"
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        meta = archive.read("momo_geo_plugin/metadata.txt").decode()
    assert all(n.startswith("momo_geo_plugin/") for n in names)
    assert {"momo_geo_plugin/__init__.py", "momo_geo_plugin/metadata.txt",
            "momo_geo_plugin/LICENSE", "momo_geo_plugin/icon.png"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".safetensors"))]
    assert f"version={momo_geo.__version__}" in meta
    assert not list((tmp_path / "dist").glob(".*"))  # no temporary zip left behind

    bad = tmp_path / "bad_plugin"
    shutil.copytree(PLUGIN_PARENT / "momo_geo_plugin", bad,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (bad / "evil.py").write_text(
        'import subprocess\nTOKEN = "ghp_' + "a" * 36 + '"\n'
        'def run(text):\n    return eval(text)\n'
        'def sh(cmd):\n    return subprocess.call(cmd, shell=True)\n')
    (bad / "weights.safetensors").write_bytes(b"\0" * 16)
    problems = security_check.scan(bad)
    text = "\n".join(problems)
    for expected in ("eval()", "shell=True", "GitHub token", "weights.safetensors", "bandit"):
        assert expected in text, text
    assert security_check.scan(PLUGIN_PARENT / "momo_geo_plugin") == []


# --------------------------------------------------------------------------------------------
# one options object, the engine's interpreter, installing it


def test_cli_api_and_plugin_share_one_options_object(plugin, iface, qgis_app, tmp_path):
    """Names, defaults, choices and output names: the CLI's flags, map_scene's options, the
    worker's answer to the plugin, the Processing parameters and the dialog's fields agree."""
    import dataclasses

    from qgis.core import QgsApplication

    from momo_geo.cli.map import map_command
    from momo_geo.inference import map_scene
    from momo_geo.inference.options import (
        MapOptions,
        default_mask_path,
        default_vector_path,
        schema,
    )
    from momo_geo_plugin.client import engine_info
    from momo_geo_plugin.dialog import MapFeaturesDialog, option_value

    fields = {f.name: f for f in dataclasses.fields(MapOptions)}
    # API: map_scene takes a MapOptions, and each field as a keyword override.
    assert inspect.signature(map_scene).parameters["options"].default is None
    # CLI: one flag per field, same default and choices.
    cli = {p.name: p for p in map_command.params}
    for name, f in fields.items():
        assert cli[name].default == f.default, name
        assert list(getattr(cli[name].type, "choices", []) or []) == list(
            f.metadata.get("choices", [])), name
    # Plugin: the worker (the engine's own Python) answers with the same schema.
    info = engine_info()
    assert info.ok and info.options == schema()["options"]
    assert list(info.options) == list(fields)
    algorithm = QgsApplication.processingRegistry().algorithmById(ALGORITHM)
    for name, f in fields.items():
        parameter = algorithm.parameterDefinition(name)
        default = parameter.defaultValue()
        if "choices" in f.metadata:
            assert parameter.options() == list(f.metadata["choices"]), name
            default = parameter.options()[default]
        elif f.default is None and "minimum" not in f.metadata:  # optional, unset (nodata)
            assert parameter.flags() & parameter.FlagOptional, name
        elif f.default is None:  # below the minimum: "the model card's"
            assert default < f.metadata["minimum"], name
            default = None
        assert default == f.default, name
    iface.active_layer = None  # an earlier test's layer may be gone
    dialog = MapFeaturesDialog(iface.window, iface=iface)
    for name, widget in dialog.option_widgets.items():
        if fields[name].default is not None or "minimum" not in fields[name].metadata:
            assert option_value(widget) == fields[name].default, name
    dialog.option_widgets["nodata"].setText("0")  # a value typed in reaches the request
    assert dialog.request().options["nodata"] == 0.0
    # Output names: scene.v2.tif -> scene.v2_mask.tif everywhere.
    scene = tmp_path / "scene.v2.tif"
    assert info.default_outputs(scene) == (str(default_mask_path(scene)),
                                           str(default_vector_path(scene)))
    assert default_mask_path(scene).name == "scene.v2_mask.tif"
    dialog.close()


def test_plugin_run_leaves_no_resource_warning(plugin, sample_scene, bundle, tmp_path):
    import gc
    import warnings

    from momo_geo_plugin.client import MapRequest, describe, run_map

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        describe(str(sample_scene), str(bundle))
        run_map(MapRequest(scene=str(sample_scene), mask_path=str(tmp_path / "m.tif"),
                           vector_path=str(tmp_path / "v.gpkg"), model=str(bundle),
                           options={"batch_size": 32}))
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


def test_earth_crs_scene_is_refused_in_the_plugin_unless_assume_mars(plugin, sample_scene,
                                                                     bundle, tmp_path):
    """A Mars model on an EPSG:4326 raster: the dialog warns, the run is refused in one line
    naming the CRS, and with the assume_mars option it maps on the Mars sphere."""
    import rasterio

    from momo_geo_plugin.client import MappingError, MapRequest, describe, run_map

    earth = tmp_path / "earth.tif"
    with rasterio.open(sample_scene) as src:
        profile = {**src.profile, "crs": "EPSG:4326",
                   "transform": rasterio.transform.from_origin(10.0, 50.0, 1e-4, 1e-4)}
        with rasterio.open(earth, "w", **profile) as dst:
            dst.write(src.read())
    warnings = describe(str(earth), str(bundle))["warnings"]
    assert any("Earth CRS" in w and "maps Mars" in w for w in warnings), warnings
    request = MapRequest(scene=str(earth), mask_path=str(tmp_path / "m.tif"),
                         vector_path=str(tmp_path / "v.gpkg"), model=str(bundle),
                         options={"batch_size": 32})
    with pytest.raises(MappingError, match="EPSG:4326.*--assume-mars"):
        run_map(request)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earth.tif"]
    logged: list[str] = []
    request.options["assume_mars"] = True
    run_map(request, log=logged.append)
    assert len([m for m in logged if "Mars sphere" in m]) == 1
    with rasterio.open(tmp_path / "m.tif") as mask:
        assert "Mars" in mask.crs.to_wkt()


def test_engine_interpreter_setting_and_detection(plugin, tmp_path, monkeypatch):
    from momo_geo_plugin import interpreter
    from momo_geo_plugin.client import ask_defaults, engine_info
    from momo_geo_plugin.interpreter import Interpreter, as_python, detected, worker_env

    venv_python = ROOT / ".venv" / "bin" / "python"
    if not venv_python.is_file():
        pytest.skip("no checkout .venv (make venv)")
    # Detected: the checkout's .venv, and the interpreter behind a momo-geo on PATH.
    script = tmp_path / "bin" / "momo-geo"
    script.parent.mkdir()
    script.write_text(f"#!{venv_python}\nimport sys\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    found = {i.source: i.python for i in detected()}
    assert found["checkout"] == str(venv_python) and found["path"] == str(venv_python)
    # The setting takes an interpreter or a venv folder.
    assert as_python(str(ROOT / ".venv")) == str(venv_python)
    monkeypatch.delenv(interpreter.ENV_VARIABLE, raising=False)
    interpreter.write_setting(str(ROOT / ".venv"))
    try:
        info = engine_info(refresh=True)
        assert info.ok and info.interpreter == Interpreter(str(venv_python), "setting")
        # A venv interpreter gets none of QGIS's Python path (Debian's old attrs stays out).
        assert "PYTHONPATH" not in worker_env(info.interpreter)
        broken = ask_defaults(Interpreter(str(tmp_path / "no-python"), "setting"))
        assert not broken.ok and "no-python" in broken.problem
        # The dialog field: Check asks the Python in the field; OK saves it.
        from momo_geo_plugin.environment import EnvironmentDialog

        dialog = EnvironmentDialog()
        assert dialog.python.filePath() == str(ROOT / ".venv")
        dialog.python.setFilePath(str(tmp_path / "no-python"))
        assert dialog.check().startswith("✖") and "no-python" in dialog.status.text()
        dialog.python.setFilePath(str(venv_python))
        assert dialog.check().startswith("✔ momo-geo ")
        dialog.accept()
        assert interpreter.read_setting() == str(venv_python)
    finally:
        interpreter.write_setting("")
        engine_info(refresh=True)


def test_debian_recipe_qgis_python_without_momo_geo_maps_through_a_venv(sample_scene, bundle,
                                                                        tmp_path):
    """docs/qgis.md's recipe: Debian's QGIS Python (/usr/bin/python3, no momo-geo, Debian's old
    attrs) with the plugin's interpreter setting pointing at a venv that has momo-geo (here the
    checkout's .venv) maps the sample scene."""
    python = Path("/usr/bin/python3")
    venv_python = ROOT / ".venv" / "bin" / "python"
    if not python.is_file() or not venv_python.is_file():
        pytest.skip("needs Debian's /usr/bin/python3 and the checkout's .venv")
    script = f"""
import json, os, sys
sys.path[:0] = [{str(PLUGIN_PARENT)!r}]
try:
    import momo_geo  # noqa
    print(json.dumps({{"skip": "momo_geo importable in system Python"}})); sys.exit(0)
except ImportError:
    pass
from qgis.testing import start_app
start_app()
from qgis.core import QgsApplication, QgsSettings
sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python", "plugins"))
from processing.core.Processing import Processing
Processing.initialize()
QgsSettings().setValue("momo-geo/python", {str(venv_python)!r})
import momo_geo_plugin, processing
plugin = momo_geo_plugin.classFactory(None)
plugin.initProcessing()
result = processing.run("{ALGORITHM}", {{"scene": {str(sample_scene)!r}, "model": {str(bundle)!r},
    "mask_path": {str(tmp_path / "mask.tif")!r}, "vector_path": {str(tmp_path / "f.gpkg")!r},
    "batch_size": 32}})
print(json.dumps({{"features": result["features"],
                  "python": plugin.dependencies.python}}))
"""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MOMO_GEO_PYTHON")}
    env.update(HOME=str(tmp_path), QT_QPA_PLATFORM="offscreen")
    report = run_script_report(python, script, env, tmp_path, timeout=240)
    assert report["python"] == str(venv_python)
    assert report["features"] > 0
    assert (tmp_path / "mask.tif").is_file() and (tmp_path / "f.gpkg").is_file()


def test_install_action_makes_a_managed_venv_with_progress(plugin, tmp_path):
    """*Install momo-geo…* from a local wheel (``--no-deps``: offline and fast): a venv made by
    QGIS's Python, momo-geo importable there, progress up to 100 %, the setting pointing at it."""
    from qgis_support import build_wheel

    from momo_geo_plugin import interpreter
    from momo_geo_plugin.client import engine_info

    wheel = build_wheel(tmp_path / "wheel")
    progress: list[float] = []
    venv = tmp_path / "profile" / "momo-geo-venv"
    try:
        task = plugin.install(f"--no-deps {wheel}", venv=venv)
        task.progressChanged.connect(progress.append)
        wait_for(lambda: task not in plugin.tasks, timeout=240)
        assert task.error == "" and task.python == str(venv / "bin" / "python")
        assert progress and max(progress) == 100.0 and progress == sorted(progress)
        assert interpreter.read_setting() == task.python
        version = subprocess.run(
            [task.python, "-c", "import momo_geo, momo_geo.inference.options as o; "
             "print(momo_geo.__file__, o.MapOptions().batch_size)"],
            capture_output=True, text=True, check=True, cwd=tmp_path).stdout
        assert str(venv) in version
        # Without torch (--no-deps) the engine is reported as incomplete, in one line.
        assert not plugin.dependencies.ok and "torch" in plugin.dependencies.message()
        failed = plugin.install("--no-index no-such-package-xyz", venv=venv)
        wait_for(lambda: failed not in plugin.tasks, timeout=120)
        assert "pip install failed" in failed.error and "\n" not in failed.error
    finally:
        interpreter.write_setting("")
        plugin.recheck()
    assert engine_info().ok
