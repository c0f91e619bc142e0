# Baseline student: all three teachers, naive averaging instead of consensus gating (the paper's baseline), distilled with the 100-epoch schedule of the CoMAD harness.
#   tools/distill.sh benchmark_configs/baselines/naive-mean_vit-tiny_8xb512-100e_in1k-224.py 8
# then evaluate the exported student like any other (tools/run_transfer.sh, tools/linear_probe.py).
_base_ = ['../distill/comad-naive-mean_vit-tiny_8xb512-100e_in1k-224.py']
baseline = dict(name='naive-mean', kind='distill',
                description='all three teachers, naive averaging instead of consensus gating (the paper\'s baseline)')
