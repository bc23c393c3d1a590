using System.Text.Json;
using Harness.Executor.Data;
using Harness.Executor.Optimizer;
using static TorchSharp.torch;

namespace Harness.Executor.Training;

/// <summary>What a checkpoint records besides the tensors. <see cref="Parameters"/> counts one model replica as the layout holds it.
/// <see cref="OptimizerStep"/> counts the iterations that stepped: the others were skipped on overflow, so they are
/// <see cref="SkippedIterations"/>. <see cref="GradScaler"/> is the loss scaler's state (Megatron keeps it in the
/// optimizer's state dict); null when the run scaled no loss. <see cref="OptimizerStates"/> names the optimizer's state
/// tensors saved beside the master weights (<see cref="IUpdateRule.States"/>); null in checkpoints that predate it, which
/// hold Adam's.</summary>
public sealed record CheckpointMeta(long Iteration, long OptimizerStep, long DataPosition, int Seed, string Model, long Parameters, string Dtype,
    CheckpointLayout Layout, GradScaler? GradScaler = null, IReadOnlyList<string>? OptimizerStates = null)
{
    /// <summary>The states the checkpoint holds: those it names, else Adam's.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public IReadOnlyList<string> SavedStates => OptimizerStates ?? AdamW.StateNames;

    [System.Text.Json.Serialization.JsonIgnore]
    public long SkippedIterations => Iteration - OptimizerStep;
}

/// <summary>
/// Checkpoints in Megatron's folder layout: SAVE/latest_checkpointed_iteration.txt names the newest SAVE/iter_0000100/,
/// which holds meta.json (iteration, optimizer step, data position, layout, the optimizer's state names) and one folder per
/// tensor x pipeline rank, mp_rank_TT[_PPP] (<see cref="CheckpointLayout"/>), with that rank's float32 master weights and the
/// optimizer's states, one file each (master.bin; Adam's exp_avg.bin and exp_avg_sq.bin, SGD's momentum_buffer.bin, as torch
/// names them; flat buffers, raw little-endian; segments.json names the ranges of the flat buffer they hold) and its CPU random
/// generator. The distributed optimizer's shards lie in dp_rank_DDD/ below it, one per data-parallel rank. The bf16 weights are the master weights cast, so they are not
/// stored; resuming restores exactly the state an uninterrupted run would have. Single-device runs use it directly
/// (<see cref="Save"/>, <see cref="Load"/>); parallel runs through DistributedCheckpoint, from the same pieces.
/// </summary>
public static class Checkpoint
{
    private const string Tracker = "latest_checkpointed_iteration.txt";
    private const string Meta = "meta.json";
    private const string SegmentsFile = "segments.json";


    /// <summary>Read chunk of at most this many elements: memory stays bounded and no array nears 2 GB.</summary>
    private const long ChunkElements = 1 << 24;

    /// <summary>In-process ranks share libtorch's one CPU generator: its state is read and set under this lock.</summary>
    private static readonly Lock RngLock = new();

    public static string Save(string root, long iteration, int seed, string model, ParamAndGradBuffer buffer, ReplicatedOptimizer optimizer, GradScaler? scaler, GptSampler sampler)
    {
        var layout = CheckpointLayout.SingleDevice;
        string rankDir = RankFolder(root, iteration, layout, 0, 0);
        WriteOptimizer(rankDir, layout, 0, optimizer);
        WriteRng(rankDir);
        return Commit(root, MetaOf(iteration, optimizer, sampler, seed, model, buffer.Count, layout, scaler));
    }

    /// <summary>The metadata of a checkpoint of <paramref name="optimizer"/>'s run at <paramref name="iteration"/>.</summary>
    public static CheckpointMeta MetaOf(long iteration, IOptimizerState optimizer, GptSampler sampler, int seed, string model, long parameters,
        CheckpointLayout layout, GradScaler? scaler) =>
        new(iteration, optimizer.Step, sampler.Position, seed, model, parameters, ScalarType.Float32.ToString(), layout, scaler, optimizer.Rule.States);

    /// <summary>Restores the newest checkpoint under root; returns its metadata. Throws InvalidDataException naming a mismatch.</summary>
    public static CheckpointMeta Load(string root, string model, ParamAndGradBuffer buffer, ReplicatedOptimizer optimizer, GptSampler sampler)
    {
        var (dir, meta) = Latest(root);
        RequireCompatible(dir, meta, model, CheckpointLayout.SingleDevice, optimizer.Rule, buffer.Count);
        string rankDir = Path.Combine(dir, meta.Layout.RankFolder(0, 0));
        ReadOptimizer(rankDir, meta, optimizer);
        optimizer.CopyMasterToParams();
        ReadRng(rankDir);
        sampler.Position = meta.DataPosition;
        return meta;
    }

    /// <summary>The folder of tensor rank t, pipeline rank p in iteration <paramref name="iteration"/>'s checkpoint.</summary>
    public static string RankFolder(string root, long iteration, CheckpointLayout layout, int tensorRank, int pipelineRank) =>
        Path.Combine(IterationFolder(root, iteration), layout.RankFolder(tensorRank, pipelineRank));

    /// <summary>Writes optimizer shard <paramref name="shard"/> (0 when replicated) into its rank folder, with the buffer ranges it holds.</summary>
    public static void WriteOptimizer(string rankDir, CheckpointLayout layout, int shard, IOptimizerState optimizer)
    {
        string dir = Path.Combine(rankDir, layout.ShardFolder(shard));
        Directory.CreateDirectory(dir);
        foreach (var (name, tensor) in optimizer.CheckpointTensors()) WriteTensor(Path.Combine(dir, name + ".bin"), tensor);
        File.WriteAllText(Path.Combine(dir, SegmentsFile), JsonSerializer.Serialize(optimizer.Segments.Select(s => new[] { s.Offset, s.Length })));
    }

    /// <summary>
    /// Fills <paramref name="optimizer"/>'s part of the flat buffer from a rank folder, whatever the shards it was saved
    /// in: each saved shard names the buffer ranges it holds, so every range this rank needs is read from the files
    /// that hold it.
    /// </summary>
    public static void ReadOptimizer(string rankDir, CheckpointMeta meta, IOptimizerState optimizer)
    {
        var tensors = optimizer.CheckpointTensors();
        var read = new HashSet<string>();
        foreach (var (name, into) in tensors)
        {
            string file = name + ".bin";
            // A tensor only some optimizers save (a precision-aware store's scales) is read where the checkpoint has it.
            if (optimizer.OptionalCheckpointTensors.Contains(name) && !File.Exists(Path.Combine(rankDir, meta.Layout.ShardFolder(0), file))) continue;
            ReadFlat(rankDir, meta, file, into, optimizer.Segments);
            read.Add(name);
        }
        optimizer.RestoreCheckpointTensors(tensors, read);
        optimizer.Step = meta.OptimizerStep;
    }

    /// <summary>A rank folder's master weights, the whole of its flat buffer of <paramref name="count"/> elements, whatever the
    /// shards they were saved in (what an export of the weights reads).</summary>
    public static Tensor ReadMaster(string rankDir, CheckpointMeta meta, long count, ScalarType dtype)
    {
        var master = empty(count, dtype: dtype);
        ReadFlat(rankDir, meta, "master.bin", master, [(0, count)]);
        return master;
    }

    /// <summary>Fills <paramref name="into"/>, which holds the buffer ranges <paramref name="segments"/> concatenated, from the
    /// shards of <paramref name="file"/> under a rank folder: each saved shard names the ranges it holds, so every range is
    /// read from the files that hold it.</summary>
    private static void ReadFlat(string rankDir, CheckpointMeta meta, string file, Tensor into, IReadOnlyList<(long Offset, long Length)> segments)
    {
        using var _ = no_grad();
        // The views of `into` are the scope's until libtorch returns (a bare temporary can be finalized mid-call).
        using var scope = NewDisposeScope();
        for (int d = 0; d < meta.Layout.OptimizerShards; d++)
        {
            string dir = Path.Combine(rankDir, meta.Layout.ShardFolder(d));
            var saved = SavedSegments(dir);
            long fileElements = saved.Sum(s => s.Length), savedAt = 0;
            foreach (var (savedOffset, savedLength) in saved)
            {
                long at = 0;
                foreach (var (offset, length) in segments)
                {
                    long from = Math.Max(offset, savedOffset), to = Math.Min(offset + length, savedOffset + savedLength);
                    if (to > from) ReadTensor(Path.Combine(dir, file), fileElements, savedAt + from - savedOffset, into.narrow(0, at + from - offset, to - from));
                    at += length;
                }
                savedAt += savedLength;
            }
        }
    }

    private static IReadOnlyList<(long Offset, long Length)> SavedSegments(string dir)
    {
        string path = Path.Combine(dir, SegmentsFile);
        try { return JsonSerializer.Deserialize<long[][]>(File.ReadAllText(path))!.Select(s => (s[0], s[1])).ToList(); }
        catch (Exception e) when (e is IOException or JsonException or NullReferenceException or IndexOutOfRangeException)
        {
            throw new InvalidDataException($"{path} is missing or damaged; the checkpoint is incomplete.");
        }
    }

    public static void WriteRng(string rankDir)
    {
        Directory.CreateDirectory(rankDir);
        lock (RngLock)
        {
            // Our own handle on libtorch's CPU generator, held until libtorch returns: TorchSharp's get_rng_state reads the state
            // through a temporary one, which the collector could finalize (deleting it) mid-call (a segfault in
            // at::Generator::get_state under the collector stress test).
            using var generator = Generator.Default;
            using var rng = generator.get_state();
            WriteTensor(Path.Combine(rankDir, "rng_state.bin"), rng);
        }
    }

    public static void ReadRng(string rankDir)
    {
        lock (RngLock)
        {
            using var generator = Generator.Default; // held until libtorch returns (see WriteRng)
            using var rng = generator.get_state();
            ReadTensor(Path.Combine(rankDir, "rng_state.bin"), rng.numel(), 0, rng);
            generator.set_state(rng);
        }
    }

    /// <summary>
    /// Makes the checkpoint of meta.Iteration current, once every rank has written its files: meta.json, then the
    /// tracker, written atomically, so a crash mid-save leaves the previous checkpoint current. Returns the folder.
    /// </summary>
    public static string Commit(string root, CheckpointMeta meta)
    {
        string dir = IterationFolder(root, meta.Iteration);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, Meta), JsonSerializer.Serialize(meta, new JsonSerializerOptions { WriteIndented = true }));
        string temp = Path.Combine(root, Tracker + ".tmp");
        File.WriteAllText(temp, meta.Iteration.ToString());
        File.Move(temp, Path.Combine(root, Tracker), overwrite: true);
        return dir;
    }

    /// <summary>The newest checkpoint under root: its folder and metadata. Throws naming what is missing or damaged.</summary>
    /// <summary>Whether <paramref name="root"/> holds checkpoints written by --save (its tracker file).</summary>
    public static bool Holds(string root) => File.Exists(Path.Combine(root, Tracker));

    public static (string Dir, CheckpointMeta Meta) Latest(string root)
    {
        string tracker = Path.Combine(root, Tracker);
        if (!File.Exists(tracker)) throw new FileNotFoundException($"--load {root} has no {Tracker}; it is not a checkpoint folder written by --save.", tracker);
        string latest = File.ReadAllText(tracker).Trim();
        if (!long.TryParse(latest, out long iteration) || iteration < 0)
            throw new InvalidDataException($"{tracker} holds '{latest}', not an iteration number; it is not a checkpoint folder written by --save.");
        string dir = IterationFolder(root, iteration);
        CheckpointMeta? meta;
        try { meta = JsonSerializer.Deserialize<CheckpointMeta>(File.ReadAllText(Path.Combine(dir, Meta))); }
        catch (JsonException) { throw new InvalidDataException($"{dir}/{Meta} is not the JSON --save writes; the checkpoint is damaged."); }
        catch (IOException) { throw new InvalidDataException($"{dir}/{Meta} is missing; the checkpoint is incomplete."); }
        if (meta?.Layout is null) throw new InvalidDataException($"{dir}/{Meta} names no model or layout; the checkpoint is damaged.");
        return (dir, meta);
    }

    /// <summary>
    /// Throws InvalidDataException unless the checkpoint in <paramref name="dir"/> is of <paramref name="model"/>, its
    /// weights are split as <paramref name="layout"/> splits them, it holds the states <paramref name="rule"/> keeps (unchecked
    /// when null), and one model replica has <paramref name="parameters"/> parameters (unchecked when null: before the model is built).
    /// </summary>
    public static void RequireCompatible(string dir, CheckpointMeta meta, string model, CheckpointLayout layout, IUpdateRule? rule = null, long? parameters = null)
    {
        if (meta.Model != model)
            throw new InvalidDataException($"The checkpoint in {dir} is of model {meta.Model}; this run builds {model}.");
        if (!meta.Layout.SplitsWeightsLike(layout))
            throw new InvalidDataException($"The checkpoint in {dir} was saved with {meta.Layout} and this run is {layout}; load it with the layout it was saved with.");
        // A state the checkpoint lacks has no value to resume from, and one this run does not keep would be dropped: either way
        // the run would not continue the saved one.
        if (rule is not null && !meta.SavedStates.SequenceEqual(rule.States))
            throw new InvalidDataException($"The checkpoint in {dir} holds the optimizer states [{string.Join(", ", meta.SavedStates)}] and this run's {rule.Flags} keeps [{string.Join(", ", rule.States)}]; resume it with the --optimizer it was saved with.");
        if (parameters is not null && meta.Parameters != parameters)
            throw new InvalidDataException($"The checkpoint in {dir} is of model {meta.Model} with {meta.Parameters} parameters; this run builds {model} with {parameters}.");
    }

    private static string IterationFolder(string root, long iteration) => Path.Combine(root, $"iter_{iteration:D7}");

    /// <summary>A flat tensor's raw bytes, in chunks.</summary>
    private static void WriteTensor(string path, Tensor t)
    {
        using var file = File.Create(path);
        for (long offset = 0; offset < t.numel(); offset += ChunkElements)
        {
            // The chunk's view and copies are the scope's until libtorch returns (a bare temporary can be finalized mid-call).
            using var scope = NewDisposeScope();
            var part = t.narrow(0, offset, Math.Min(ChunkElements, t.numel() - offset)).cpu().contiguous();
            file.Write(part.bytes);
        }
    }

    /// <summary>Elements [skip, skip + into.numel()) of a file that holds <paramref name="fileElements"/> of into's dtype, into a flat tensor.</summary>
    private static void ReadTensor(string path, long fileElements, long skip, Tensor into)
    {
        long size = into.element_size();
        using var file = File.Exists(path) ? File.OpenRead(path) : throw new InvalidDataException($"{path} is missing; the checkpoint is damaged.");
        if (file.Length != fileElements * size)
            throw new InvalidDataException($"{path} holds {file.Length} bytes, not the {fileElements * size} this checkpoint describes; the checkpoint is damaged.");
        file.Position = skip * size;
        for (long offset = 0; offset < into.numel(); offset += ChunkElements)
        {
            long n = Math.Min(ChunkElements, into.numel() - offset);
            using var cpu = empty(n, dtype: into.dtype);
            var bytes = new byte[n * size];
            file.ReadExactly(bytes);
            cpu.bytes = bytes;
            using var target = into.narrow(0, offset, n);
            target.copy_(cpu);
        }
    }
}
