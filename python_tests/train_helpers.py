"""What the trainer's distributed tests share: the single-process reference of a
sharded evaluation."""
import torch
from torch.utils.data import DataLoader

from vkd_kernels.train.data import collate_skip
from vkd_kernels.train.engine import ShardSampler, evaluate_counts


def shard_counts(model, dataset, batch_size: int, world: int = 2) -> list:
    """evaluate_counts of each rank's shard (ShardSampler), in this process on one thread
    (the threads a DDP worker gets), so the figures match the ranks' to the last bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [evaluate_counts(model, DataLoader(dataset, batch_size=batch_size,
                                                  sampler=ShardSampler(dataset, rank, world),
                                                  collate_fn=collate_skip), torch.device("cpu"))
                for rank in range(world)]
    finally:
        torch.set_num_threads(threads)
