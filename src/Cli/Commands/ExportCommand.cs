using Harness.Cli.Arguments;
using Harness.Cli.Output;
using Harness.Executor.Native;
using Harness.Executor.Training;
using Harness.Executor.Training.Interchange;
using Harness.Executor.Transformer;
using Harness.Megatron;
using Harness.Simulator.Specs;

namespace Harness.Cli.Commands;

/// <summary>
/// `harness export`: the newest checkpoint a run saved (`--load`, any layout) as a Hugging Face model folder (`--out`):
/// config.json and model.safetensors in GPT-2's or Llama's names (<see cref="HfLayout"/>), float32, the tables cut to the
/// tokenizer's vocabulary. It takes the run's own flags (the model, its tensor and pipeline layout, the vocabulary padding),
/// which the checkpoint is checked against, so the run's command line with --load and --out pasted in exports it.
/// </summary>
public static class ExportCommand
{
    public static int Run(string[] args)
    {
        var flags = RunArguments.Flags;
        var cl = CommandLine.Parse(RunArguments.WithDefaults(args), flags, FlagReader.Run);
        if (cl.Switch("--help"))
        {
            Console.WriteLine("usage: harness export --load CHECKPOINT --out DIR [the saving run's model and layout flags]   -> DIR/config.json, DIR/model.safetensors");
            Flag.PrintHelp(flags.Where(f => f.Help.Length > 0), 44);
            return 0;
        }
        string? output = cl.String("--out");
        var run = RunArguments.Read(cl, launchedWorldSize: null);
        if (run is var (model, description, settings))
        {
            cl.Errors.AddRange(model.Validate());
            if (cl.Errors.Count == 0) cl.Errors.AddRange(description.Validate(model, description.WorldSize));
            if (settings.Load is null) cl.Errors.Add("give --load CHECKPOINT, the folder a run's --save wrote.");
            if (settings.LoadFormat == LoadFormat.Hf) cl.Errors.Add("--load-format hf names a Hugging Face folder; export reads a checkpoint of --save (--load-format harness).");
            if (output is null) cl.Errors.Add("give --out DIR, the folder to write config.json and model.safetensors in.");
            else if (File.Exists(Path.Combine(output, HfCheckpoint.WeightsFile)) && !settings.Overwrite)
                cl.Errors.Add($"--out '{output}' already holds a {HfCheckpoint.WeightsFile}; pass another --out, or --overwrite to replace it.");
            else if (OutputFolder.Create(output) is string outError) cl.Errors.Add(outError);
        }
        if (cl.Errors.Count > 0 || run is null)
        {
            foreach (var e in cl.Errors) Console.Error.WriteLine($"harness export: {e}");
            return 2;
        }
        var (m, d, s) = run.Value;
        try
        {
            TorchRuntime.Initialize(ExecutionDevice.Cpu, s.Libtorch);
            // The weights and every tensor made from them (the HF layout's transposes and splits) are the scope's until libtorch
            // returns: a bare temporary outside any scope can be finalized mid-call.
            using var scope = TorchSharp.torch.NewDisposeScope();
            var padded = VocabPadding.Pad(m, s.MakeVocabSizeDivisibleBy, d.TensorParallel);
            var serial = CheckpointWeights.Read(s.Load!, padded, d);
            var meta = Checkpoint.Latest(s.Load!).Meta;
            var (layout, tensors) = HfCheckpoint.Write(output!, serial, m, d, new Dictionary<string, string>
            {
                ["harness_model"] = m.Name,
                ["harness_iteration"] = meta.Iteration.ToString(System.Globalization.CultureInfo.InvariantCulture),
            });
            long parameters = tensors.Sum(t => t.Tensor.numel());
            Console.WriteLine($"harness export: wrote {Path.Combine(output!, HfCheckpoint.WeightsFile)} ({tensors.Count} tensors, {parameters} parameters, float32) " +
                $"and {HfCheckpoint.ConfigFile} (model_type {layout.ModelType}) from iteration {meta.Iteration} of {s.Load}.");
            return 0;
        }
        catch (Exception e) when (e is NativeLoadException or FileNotFoundException or InvalidDataException or ArgumentException)
        {
            Console.Error.WriteLine($"harness export: {e.Message}");
            return 2;
        }
    }
}
