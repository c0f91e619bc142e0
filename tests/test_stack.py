"""The installed stack works on this machine: timm, MMSeg, MMDet (compiled mmcv ops), pycocotools,
and an mmengine Runner that resumes its own checkpoint with safe loading on."""
import os

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.mm


def test_timm_vit_tiny():
    import timm

    m = timm.create_model("vit_tiny_patch16_224", num_classes=0)
    assert (m.embed_dim, len(m.blocks), m.blocks[0].attn.num_heads) == (192, 12, 3)
    assert m(torch.randn(1, 3, 224, 224)).shape == (1, 192)


def test_mmcv_compiled_ops():
    from mmcv.ops import RoIAlign, nms

    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]
    feat = torch.arange(16.0).view(1, 1, 4, 4).requires_grad_(True)
    out = RoIAlign((1, 1), 1.0, 2, aligned=False)(feat, torch.tensor([[0.0, 0, 0, 2, 2]]))
    out.sum().backward()
    assert out.shape == (1, 1, 1, 1) and feat.grad is not None


def _build(cfg_dict, registry):
    from mmengine.config import ConfigDict

    return registry.build(ConfigDict(cfg_dict))


def test_mmseg_upernet_vit_train_and_infer():
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    from mmseg.utils import register_all_modules

    register_all_modules()
    norm = dict(type="BN", requires_grad=True)
    model = _build(dict(
        type="EncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[123.7, 116.3, 103.5], std=[58.4, 57.1, 57.4],
                               bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(64, 64)),
        backbone=dict(type="VisionTransformer", img_size=(64, 64), patch_size=16, embed_dims=32, num_layers=4,
                      num_heads=2, out_indices=(0, 1, 2, 3)),
        neck=dict(type="MultiLevelNeck", in_channels=[32] * 4, out_channels=32, scales=[4, 2, 1, 0.5]),
        decode_head=dict(type="UPerHead", in_channels=[32] * 4, in_index=[0, 1, 2, 3], pool_scales=(1, 2),
                         channels=16, num_classes=3, norm_cfg=norm, align_corners=False,
                         loss_decode=dict(type="CrossEntropyLoss", loss_weight=1.0)),
        train_cfg=dict(), test_cfg=dict(mode="whole")), MODELS)
    samples = []
    for _ in range(2):
        s = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 3, (1, 64, 64))))
        s.set_metainfo(dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        samples.append(s)
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in range(2)], data_samples=samples)
    from mmengine.optim import OptimWrapper

    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    log = model.train_step(data, ow)
    assert torch.isfinite(log["loss"]) and "decode.loss_ce" in log
    model.eval()
    out = model.test_step(data)
    assert out[0].pred_sem_seg.data.shape == (1, 64, 64)


def test_mmdet_mask_rcnn_train_and_infer(tmp_path):
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.optim import OptimWrapper
    from mmengine.structures import InstanceData

    register_all_modules()
    # `mmdet::` inheritance goes through pkg_resources (hence setuptools < 81)
    (tmp_path / "cfg.py").write_text("_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']\n")
    cfg = Config.fromfile(str(tmp_path / "cfg.py")).model
    cfg.backbone.update(depth=18, init_cfg=None)
    cfg.neck.in_channels = [64, 128, 256, 512]
    cfg.roi_head.bbox_head.num_classes = 2
    cfg.roi_head.mask_head.num_classes = 2
    model = MODELS.build(cfg)
    h, w = 128, 160
    sample = DetDataSample()
    sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), scale_factor=(1.0, 1.0),
                             batch_input_shape=(h, w)))
    from mmdet.structures.mask import BitmapMasks

    masks = np.zeros((1, h, w), np.uint8)
    masks[0, 20:80, 30:90] = 1
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[30.0, 20, 90, 80]]), labels=torch.tensor([1]),
                                       masks=BitmapMasks(masks, h, w))
    data = dict(inputs=[torch.randint(0, 255, (3, h, w), dtype=torch.uint8)], data_samples=[sample])
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.001))
    log = model.train_step(data, ow)
    assert {"loss_rpn_cls", "loss_cls", "loss_bbox", "loss_mask"} <= set(log)
    model.eval()
    out = model.test_step(data)[0]
    assert "masks" in out.pred_instances and out.pred_instances.bboxes.shape[-1] == 4


def test_cocoeval_known_ap(tmp_path):
    """One image, two GT boxes; one perfect detection -> AP@[.5:.95] = 0.5 (recall caps at 1/2)."""
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = dict(images=[dict(id=1, width=100, height=100, file_name="a.jpg")],
              categories=[dict(id=1, name="thing")],
              annotations=[dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 30, 30], area=900, iscrowd=0),
                           dict(id=2, image_id=1, category_id=1, bbox=[60, 60, 30, 30], area=900, iscrowd=0)])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    coco = COCO(str(tmp_path / "gt.json"))
    dets = coco.loadRes([dict(image_id=1, category_id=1, bbox=[10, 10, 30, 30], score=0.9)])
    ev = COCOeval(coco, dets, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    # at every IoU threshold: precision 1 up to recall 0.5, nothing after. COCOeval samples
    # 101 recall points 0, 0.01, ..., 1: the 51 points <= 0.5 have precision 1.
    assert ev.stats[0] == pytest.approx(51 / 101, abs=1e-9)
    assert ev.stats[1] == pytest.approx(51 / 101, abs=1e-9)  # AP at IoU 0.5
    assert ev.stats[8] == pytest.approx(0.5)  # AR@100: one of two objects found


def test_runner_checkpoint_resumes_with_safe_loading(tmp_path):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    from comad.mm_compat import enable_safe_resume

    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
    enable_safe_resume()

    class M(BaseModel):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)
            self.calls = 0

        def forward(self, inputs, mode="loss"):
            self.calls += 1
            return dict(loss=self.lin(inputs).pow(2).mean())

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            return dict(inputs=torch.full((4,), float(i)))

    def runner(max_iters, resume):
        return Runner(model=M(), work_dir=str(tmp_path), resume=resume,
                      train_dataloader=dict(dataset=DS(), sampler=dict(type="DefaultSampler", shuffle=True),
                                            batch_size=4, collate_fn=dict(type="default_collate")),
                      optim_wrapper=dict(optimizer=dict(type="AdamW", lr=1e-3)),
                      train_cfg=dict(by_epoch=False, max_iters=max_iters),
                      default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=2, by_epoch=False)),
                      randomness=dict(seed=0))

    runner(2, False).train()
    with pytest.raises(Exception, match="HistoryBuffer|weights_only|Unsupported global"):
        torch.load(tmp_path / "iter_2.pth", weights_only=True)  # plain safe loading alone refuses it
    r = runner(4, True)
    r.train()
    assert r.iter == 4 and r.model.calls == 2  # two iterations after the resumed two
    assert int(r.optim_wrapper.optimizer.state_dict()["state"][0]["step"]) == 4  # Adam state carried over
