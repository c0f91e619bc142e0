# The data of the ImageNet demo configs (demo/*.py, `tools/run_transfer.sh --demo`): real labelled
# digits (sklearn) in ImageFolder layout, made once by transfer.imagenet.demo_data.
demo_data = dict(data_dir=None,  # None: work_dirs/demo_data/imagenet-demo
                 source='digits', img_size=32, val_fraction=0.2, per_class=None, seed=0)
