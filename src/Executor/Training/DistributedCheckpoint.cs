using Harness.Executor.Data;
using Harness.Executor.Distributed;
using static TorchSharp.torch;

namespace Harness.Executor.Training;

/// <summary>
/// Checkpoints of a parallel run (Megatron's checkpointing.py save_checkpoint / load_checkpoint), in the folders of
/// <see cref="Checkpoint"/>: every tensor x pipeline rank's state goes to its mp_rank_TT[_PPP] folder, written by
/// its first data-parallel rank (the replicas hold the same), or with the distributed optimizer by every
/// data-parallel rank into dp_rank_DDD. Rank 0 commits the checkpoint once every rank has written. Loading re-cuts
/// the optimizer state when the data-parallel sharding differs, so a checkpoint resumes under any data or context
/// parallelism and either optimizer, as long as tensor and pipeline parallelism split the weights alike.
/// Both are collective over the world.
/// </summary>
public static class DistributedCheckpoint
{
    public static void Save(string root, long iteration, int seed, ParallelTrainer trainer, GptSampler sampler)
    {
        var groups = trainer.Groups;
        var layout = trainer.CheckpointLayout;
        long parameters = ReplicaParameters(trainer);
        string rankDir = Checkpoint.RankFolder(root, iteration, layout, groups.TensorRank, groups.PipelineRank);
        int shard = groups.DataWithContext.Rank;
        if (shard == 0 || layout.OptimizerShards > 1) Checkpoint.WriteOptimizer(rankDir, layout, shard, trainer.Optimizer);
        if (shard == 0) Checkpoint.WriteRng(rankDir);
        groups.World.Barrier();
        if (groups.World.Rank == 0)
            Checkpoint.Commit(root, Checkpoint.MetaOf(iteration, trainer.Optimizer, sampler, seed, trainer.Model.Name, parameters, layout, trainer.GradScaler));
    }

    /// <summary>Restores this rank's part of the newest checkpoint under root; returns its metadata. Throws InvalidDataException naming a mismatch.</summary>
    public static CheckpointMeta Load(string root, ParallelTrainer trainer, GptSampler sampler)
    {
        var groups = trainer.Groups;
        long parameters = ReplicaParameters(trainer);
        var (dir, meta) = Checkpoint.Latest(root);
        Checkpoint.RequireCompatible(dir, meta, trainer.Model.Name, trainer.CheckpointLayout, trainer.Optimizer.Rule, parameters);
        string rankDir = Path.Combine(dir, meta.Layout.RankFolder(groups.TensorRank, groups.PipelineRank));
        Checkpoint.ReadOptimizer(rankDir, meta, trainer.Optimizer);
        trainer.Optimizer.CopyMasterToParams();
        Checkpoint.ReadRng(rankDir);
        if (meta.GradScaler is { } saved) trainer.GradScaler = trainer.GradScaler?.Restore(saved);
        sampler.Position = meta.DataPosition;
        return meta;
    }

    /// <summary>Parameters of one model replica as its tensor and pipeline ranks hold them (a tied embedding counted on both ends).</summary>
    private static long ReplicaParameters(ParallelTrainer trainer)
    {
        using var count = tensor(new[] { trainer.Buffer.Count }, device: trainer.Buffer.Params.device);
        trainer.Groups.ModelParallel.AllReduce(count);
        using var host = count.cpu();
        return host.item<long>();
    }
}
