# The 100-epoch short schedule of the ImageNet-1K fine-tune (docs/method.md §4); all else as 300e.
_base_ = ['./finetune_vit-tiny_8xb128-300e_in1k-224.py']
protocol_name = 'finetune MAE/BEiT recipe, 100 epochs'
epochs = 100
