# Shared runtime settings of the ImageNet benchmark configs (transfer.imagenet).
seed = 0
name = None            # student name in the tables; None: from the student path
device = None          # None: cuda when available, else cpu
num_workers = 10
resume = True          # continue from <work_dir>/checkpoint_last.pth when it exists
log_interval = 50      # optimizer steps between scalars.json lines
amp = 'bf16'           # autocast dtype on GPU (ignored on CPU); 'fp16' adds a GradScaler; None: fp32
mean = (0.485, 0.456, 0.406)
std = (0.229, 0.224, 0.225)
interpolation = 'bicubic'
train_subset = None    # int: a class-balanced, seeded subset of the training split (the demo configs of the online protocols)
