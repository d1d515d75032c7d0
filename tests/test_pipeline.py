"""The image-variation pipeline: the tiny preset round-trips through save_pretrained/from_pretrained; offline errors."""
import json
import numpy as np
import pytest
from conftest import run_cli


def test_tiny_preset_round_trips_through_from_pretrained():
    from diffusers import StableDiffusionImageVariationPipeline, UNet2DConditionModel, AutoencoderKL
    from transformers import CLIPVisionModelWithProjection, CLIPImageProcessor
    from aidetect.gen.pipeline import preset_dir, load_pipeline
    d = preset_dir('tiny')
    index = json.loads((d / 'model_index.json').read_text())
    assert index['_class_name'] == 'StableDiffusionImageVariationPipeline'
    for part in ('unet', 'vae', 'image_encoder', 'feature_extractor', 'scheduler', 'safety_checker'):
        assert (d / part).is_dir(), part
    pipe = load_pipeline('tiny', device='cpu')
    assert isinstance(pipe, StableDiffusionImageVariationPipeline)
    assert isinstance(pipe.unet, UNet2DConditionModel) and isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.image_encoder, CLIPVisionModelWithProjection)
    assert isinstance(pipe.feature_extractor, CLIPImageProcessor)
    assert type(pipe.scheduler).__name__ == 'DPMSolverMultistepScheduler'   # the fast default replaces PNDM


@pytest.mark.parametrize('w,h', [(64, 64), (64, 32), (96, 64)])
def test_tiny_backend_makes_the_asked_size(tiny_backend, w, h):
    from conftest import noise_image
    cond = tiny_backend.prepare(noise_image())
    out = tiny_backend.generate([cond, cond], [1, 2], w, h)
    assert [v.image.size for v in out] == [(w, h)] * 2
    assert out[0].image.tobytes() != out[1].image.tobytes()   # different seeds, different images
    again = tiny_backend.generate([cond, cond], [1, 2], w, h)
    assert [v.image.tobytes() for v in again] == [v.image.tobytes() for v in out]   # same seeds, same bytes
    alone = np.asarray(tiny_backend.generate([cond], [1], w, h)[0].image, dtype=int)
    assert np.abs(alone - np.asarray(out[0].image, dtype=int)).max() <= 2   # another batch size: float noise only


def test_default_model_offline_gives_a_clear_error(photo_folder, tmp_path):
    p = run_cli('aidetect-gen', 'variations', photo_folder, '--out', tmp_path / 'out', '--device', 'cpu',
                env={'HF_HUB_OFFLINE': '1'})
    assert p.returncode == 2, p.stderr
    assert 'Traceback' not in p.stderr
    assert 'lambdalabs/sd-image-variations-diffusers' in p.stderr and 'v2.0' in p.stderr
    assert '--model' in p.stderr and 'tiny' in p.stderr


def test_local_folder_that_is_not_a_pipeline(tmp_path, photo_folder):
    (tmp_path / 'notapipe').mkdir()
    p = run_cli('aidetect-gen', 'variations', photo_folder, '--out', tmp_path / 'out', '--model', tmp_path / 'notapipe')
    assert p.returncode == 2 and 'model_index.json' in p.stderr and 'Traceback' not in p.stderr
