using System.Buffers.Binary;
using System.Globalization;
using Google.Protobuf;
using Harness.Cli.Commands;
using Harness.Executor.Training.Records;

namespace Harness.Tests.Executor;

/// <summary>--tensorboard-dir: event files read back here by a reader of the TFRecord framing and the Event protocol buffer
/// written from their specification (tensorflow/tensorboard record_writer.py, event.proto, summary.proto), every record's
/// two CRCs checked and every scalar matched against the run's metrics.csv.</summary>
[Collection("Console")]
public class TensorBoardTests
{
    [Fact]
    public void Crc32CMatchesPublishedCheckValues()
    {
        // The CRC catalogue's check value of CRC-32C and RFC 3720 appendix B.4's vectors (32 zero bytes, 32 bytes of 0xFF).
        Assert.Equal(0xE3069283u, Crc32C.Of("123456789"u8));
        Assert.Equal(0x8A9136AAu, Crc32C.Of(new byte[32]));
        Assert.Equal(0x62A8AB43u, Crc32C.Of(Enumerable.Repeat((byte)0xFF, 32).ToArray()));
        Assert.Equal(0u, Crc32C.Of([]));
        // Mask: rotate right 15, add 0xa282ead8; by hand for 0xE3069283: ror15 = 0x25071A0D... + 0xa282ead8 = 0xC78AB0E5 (mod 2^32).
        Assert.Equal(0xC78AB0E5u, Crc32C.Masked("123456789"u8));
    }

    private sealed record Event(double WallTime, long Step, string? FileVersion, IReadOnlyList<(string Tag, float Value)> Values);

    /// <summary>Every record of the event file at <paramref name="path"/>, its length's and data's masked CRCs checked.</summary>
    private static List<Event> Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var events = new List<Event>();
        int at = 0;
        while (at < bytes.Length)
        {
            ulong length = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(at, 8));
            Assert.Equal(Crc32C.Masked(bytes.AsSpan(at, 8)), BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(at + 8, 4)));
            var data = bytes.AsSpan(at + 12, (int)length).ToArray();
            Assert.Equal(Crc32C.Masked(data), BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(at + 12 + (int)length, 4)));
            events.Add(Decode(data));
            at += 12 + (int)length + 4;
        }
        Assert.Equal(bytes.Length, at);
        return events;
    }

    private static Event Decode(byte[] data)
    {
        var input = new CodedInputStream(data);
        double wall = 0;
        long step = 0;
        string? version = null;
        var values = new List<(string, float)>();
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 1: wall = input.ReadDouble(); break;
                case 2: step = input.ReadInt64(); break;
                case 3: version = input.ReadString(); break;
                case 5:
                    var summary = new CodedInputStream(input.ReadBytes().ToByteArray());
                    uint s;
                    while ((s = summary.ReadTag()) != 0)
                    {
                        Assert.Equal(1, WireFormat.GetTagFieldNumber(s));
                        var value = new CodedInputStream(summary.ReadBytes().ToByteArray());
                        (string name, float number) = ("", float.NaN);
                        uint v;
                        while ((v = value.ReadTag()) != 0)
                        {
                            if (WireFormat.GetTagFieldNumber(v) == 1) name = value.ReadString();
                            else { Assert.Equal(2, WireFormat.GetTagFieldNumber(v)); number = value.ReadFloat(); }
                        }
                        values.Add((name, number));
                    }
                    break;
                default: throw new InvalidDataException($"unexpected field {WireFormat.GetTagFieldNumber(tag)}");
            }
        }
        return new Event(wall, step, version, values);
    }

    private static readonly string[] Tiny =
    [
        "--num-layers", "1", "--hidden-size", "16", "--num-attention-heads", "2", "--seq-length", "8", "--vocab-size", "64", "--mock-data",
        "--micro-batch-size", "1", "--global-batch-size", "2", "--device", "cpu", "--lr", "1e-3", "--lr-warmup-iters", "1",
    ];

    [Fact]
    public void EveryScalarIsTheMetricsRowsByMegatronsNames()
    {
        string dir = Path.Combine(TestTemp.Root, $"harness-tb-{Guid.NewGuid():N}");
        string events = Path.Combine(dir, "tb");
        var (code, _, error) = ConsoleCapture.Run(RunCommand.Run, [.. Tiny, "--train-iters", "4", "--out", dir, "--tensorboard-dir", events,
            "--tensorboard-log-interval", "2", "--log-timers-to-tensorboard", "--log-memory-to-tensorboard", "--log-validation-ppl-to-tensorboard",
            "--log-world-size-to-tensorboard", "--split", "80,20,0", "--eval-interval", "3", "--eval-iters", "1"]);
        Assert.True(code == 0, error);
        var rows = MetricsCsv.Read(Path.Combine(dir, "metrics.csv"));
        var file = Assert.Single(Directory.GetFiles(events));
        Assert.StartsWith("events.out.tfevents.", Path.GetFileName(file));
        var e = Read(file);
        Assert.Equal("brain.Event:2", e[0].FileVersion);
        Assert.Empty(e[0].Values);
        var c = CultureInfo.InvariantCulture;
        // Expected by hand from metrics.csv: training scalars at iterations 2 and 4 (the interval), each also at the consumed
        // samples (iteration x global batch 2); iteration-time and throughput are this process's after its first iteration;
        // validation after iterations 3 (the eval interval) and 4 (the last), perplexity exp(loss).
        var expected = new List<(long Step, string Tag, double Value)>();
        foreach (var r in rows)
        {
            long samples = r.Iteration * 2;
            var at = new List<(string, double)>();
            if (r.Iteration % 2 == 0)
            {
                at.AddRange([("learning-rate", r.LearningRate), ("batch-size", 2), ("lm loss", r.Loss), ("world-size", 1), ("grad-norm", r.GradNorm!.Value),
                    ("mem-used-bytes", r.MemoryUsedBytes), ("iteration-time", r.ElapsedMs / 1000), ("throughput", r.ModelTflopsPerGpu),
                    ("host-gap-time", r.HostGapMs / 1000), ("enqueue-time", r.EnqueueMs / 1000)]);
            }
            if (r.ValidationLoss is double v) at.AddRange([("lm loss validation", v), ("lm loss validation ppl", Math.Exp(v))]);
            foreach (var (tag, value) in at) expected.Add((r.Iteration, tag, value));
            foreach (var (tag, value) in at.Where(x => x.Item1 is not ("mem-used-bytes" or "iteration-time" or "throughput" or "host-gap-time" or "enqueue-time")))
                expected.Add((samples, tag + " vs samples", value));
        }
        Assert.Equal(4, rows.Count);
        Assert.Equal([3, 4], rows.Where(r => r.ValidationLoss is not null).Select(r => r.Iteration));
        var written = e.Skip(1).SelectMany(x => x.Values.Select(v => (x.Step, v.Tag, Value: v.Value))).ToList();
        Assert.Equal(expected.Select(x => (x.Step, x.Tag)).Order(), written.Select(x => (x.Step, x.Tag)).Order());
        foreach (var (step, tag, value) in written)
        {
            var want = expected.Single(x => x.Step == step && x.Tag == tag).Value;
            // metrics.csv keeps times to the microsecond (F3 ms) and throughput to 4 decimals; the rest round-trips exactly.
            double tolerance = tag.EndsWith("-time", StringComparison.Ordinal) ? 1e-6 : tag == "throughput" ? 5e-5 : 0;
            if (tolerance == 0) Assert.True((float)want == value, $"{tag} at {step}: {value.ToString("R", c)} is not {want.ToString("R", c)}");
            else Assert.True(Math.Abs(want - value) <= tolerance + Math.Abs(want) * 1e-6, $"{tag} at {step}: {value} is not {want}");
        }
        Assert.All(e, x => Assert.InRange(x.WallTime, DateTimeOffset.UtcNow.ToUnixTimeSeconds() - 3600, DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 1));
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void AResumedRunAddsAFileWithTheIterationsAfterItsCheckpoint()
    {
        string dir = Path.Combine(TestTemp.Root, $"harness-tb-{Guid.NewGuid():N}");
        string events = Path.Combine(dir, "tb"), save = Path.Combine(dir, "ck");
        string[] common = [.. Tiny, "--out", dir, "--tensorboard-dir", events, "--save", save];
        var (code, _, error) = ConsoleCapture.Run(RunCommand.Run, [.. common, "--train-iters", "2"]);
        Assert.True(code == 0, error);
        (code, _, error) = ConsoleCapture.Run(RunCommand.Run, [.. common, "--train-iters", "4", "--load", save]);
        Assert.True(code == 0, error);
        var files = Directory.GetFiles(events).Select(Read).OrderBy(f => f[0].WallTime).ThenBy(f => f.Skip(1).First().Step).ToList();
        Assert.Equal(2, files.Count);
        // Each file starts with its version record; the first holds iterations 1-2, the resumed one 3-4 (by iteration, and at
        // samples 2x those).
        Assert.All(files, f => Assert.Equal("brain.Event:2", f[0].FileVersion));
        long[] Steps(List<Event> f) => f.Skip(1).Where(x => x.Values.Any(v => v.Tag == "lm loss")).Select(x => x.Step).ToArray();
        Assert.Equal([1, 2], Steps(files[0]));
        Assert.Equal([3, 4], Steps(files[1]));
        var rows = MetricsCsv.Read(Path.Combine(dir, "metrics.csv"));
        var losses = files.SelectMany(f => f.Skip(1)).SelectMany(x => x.Values.Where(v => v.Tag == "lm loss").Select(v => (x.Step, v.Value)));
        Assert.Equal(rows.Select(r => (r.Iteration, (float)r.Loss)), losses);
        Directory.Delete(dir, recursive: true);
    }
}
