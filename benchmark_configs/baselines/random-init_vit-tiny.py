# Baseline student: the CoMAD student architecture at timm's random initialisation (no training).
#   tools/export_random_student.py benchmark_configs/baselines/random-init_vit-tiny.py --seed 0
# writes work_dirs/random-init_vit-tiny/student/student.safetensors (comad.export format).
_base_ = ['../distill/comad_vit-tiny_8xb512-300e_in1k-224.py']
baseline = dict(name='random-init', kind='random', seed=0,
                description='student architecture (model.student.arch) at timm initialisation')
