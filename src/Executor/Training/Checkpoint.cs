using System.Text.Json;
using Harness.Executor.Data;
using Harness.Executor.Optimizer;
using static TorchSharp.torch;

namespace Harness.Executor.Training;

/// <summary>What a checkpoint records besides the tensors.</summary>
public sealed record CheckpointMeta(long Iteration, long OptimizerStep, long DataPosition, int Seed, string Model, long Parameters, string Dtype);

/// <summary>
/// Checkpoints in Megatron's folder layout: SAVE/iter_0000100/ with the state, and SAVE/latest_checkpointed_iteration.txt
/// naming the newest. The state is the float32 master weights and both Adam moments (flat buffers, raw little-endian),
/// the CPU random generator, and meta.json (iteration, optimizer step, data position). The bf16 weights are the master
/// weights cast, so they are not stored; resuming restores exactly the state an uninterrupted run would have.
/// </summary>
public static class Checkpoint
{
    private const string Tracker = "latest_checkpointed_iteration.txt";

    public static string Save(string root, long iteration, int seed, string model, ParamAndGradBuffer buffer, AdamW adam, GptSampler sampler)
    {
        string dir = IterationFolder(root, iteration);
        Directory.CreateDirectory(dir);
        WriteTensor(Path.Combine(dir, "master.bin"), buffer.Master);
        WriteTensor(Path.Combine(dir, "exp_avg.bin"), adam.ExpAvg);
        WriteTensor(Path.Combine(dir, "exp_avg_sq.bin"), adam.ExpAvgSq);
        using (var rng = get_rng_state()) WriteTensor(Path.Combine(dir, "rng_state.bin"), rng);
        var meta = new CheckpointMeta(iteration, adam.Step, sampler.Position, seed, model, buffer.Count, buffer.Master.dtype.ToString());
        File.WriteAllText(Path.Combine(dir, "meta.json"), JsonSerializer.Serialize(meta, new JsonSerializerOptions { WriteIndented = true }));
        // The tracker is written last and atomically: a crash mid-save leaves the previous checkpoint current.
        string temp = Path.Combine(root, Tracker + ".tmp");
        File.WriteAllText(temp, iteration.ToString());
        File.Move(temp, Path.Combine(root, Tracker), overwrite: true);
        return dir;
    }

    /// <summary>Restores the newest checkpoint under root; returns its metadata. Throws InvalidDataException naming a mismatch.</summary>
    public static CheckpointMeta Load(string root, string model, ParamAndGradBuffer buffer, AdamW adam, GptSampler sampler)
    {
        string tracker = Path.Combine(root, Tracker);
        if (!File.Exists(tracker)) throw new FileNotFoundException($"--load {root} has no {Tracker}; it is not a checkpoint folder written by --save.", tracker);
        string latest = File.ReadAllText(tracker).Trim();
        if (!long.TryParse(latest, out long iteration) || iteration < 0)
            throw new InvalidDataException($"{tracker} holds '{latest}', not an iteration number; it is not a checkpoint folder written by --save.");
        string dir = IterationFolder(root, iteration);
        CheckpointMeta? meta;
        try { meta = JsonSerializer.Deserialize<CheckpointMeta>(File.ReadAllText(Path.Combine(dir, "meta.json"))); }
        catch (JsonException) { throw new InvalidDataException($"{dir}/meta.json is not the JSON --save writes; the checkpoint is damaged."); }
        if (meta is null) throw new InvalidDataException($"{dir}/meta.json is empty.");
        if (meta.Model != model || meta.Parameters != buffer.Count)
            throw new InvalidDataException($"The checkpoint in {dir} is of model {meta.Model} with {meta.Parameters} parameters; this run builds {model} with {buffer.Count}.");
        using (no_grad())
        {
            ReadTensor(Path.Combine(dir, "master.bin"), buffer.Master);
            ReadTensor(Path.Combine(dir, "exp_avg.bin"), adam.ExpAvg);
            ReadTensor(Path.Combine(dir, "exp_avg_sq.bin"), adam.ExpAvgSq);
            buffer.CopyMasterToParams();
        }
        using (var rng = get_rng_state())
        {
            ReadTensor(Path.Combine(dir, "rng_state.bin"), rng);
            set_rng_state(rng);
        }
        adam.Step = meta.OptimizerStep;
        sampler.Position = meta.DataPosition;
        return meta;
    }

    private static string IterationFolder(string root, long iteration) => Path.Combine(root, $"iter_{iteration:D7}");

    private static void WriteTensor(string path, Tensor t)
    {
        using var cpu = t.cpu().contiguous();
        using var file = File.Create(path);
        file.Write(cpu.bytes);
    }

    private static void ReadTensor(string path, Tensor into)
    {
        byte[] bytes = File.ReadAllBytes(path);
        using var cpu = empty(into.shape, dtype: into.dtype);
        if (bytes.Length != cpu.bytes.Length)
            throw new InvalidDataException($"{path} holds {bytes.Length} bytes; this model needs {cpu.bytes.Length}.");
        cpu.bytes = bytes;
        into.copy_(cpu);
    }
}
