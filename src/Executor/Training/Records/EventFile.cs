using System.Buffers.Binary;
using Google.Protobuf;

namespace Harness.Executor.Training.Records;

/// <summary>
/// A TensorBoard event file: TFRecords (a little-endian uint64 length, the masked CRC-32C of those 8 bytes, the data, the
/// masked CRC-32C of the data) each holding an Event protocol buffer, the first one naming the file's version "brain.Event:2"
/// (tensorflow/tensorboard at 70b76c9: tensorboard/summary/writer/record_writer.py, event_file_writer.py,
/// tensorboard/compat/proto/event.proto and summary.proto). The Events are encoded field by field: wall_time (1, double),
/// step (2, int64), file_version (3, string), summary (5) = Summary{value (1, repeated) = Value{tag (1), simple_value (2, float)}}.
/// Every Append is flushed to the file, so a crash loses no written scalar.
/// </summary>
public sealed class EventFile : IDisposable
{
    private static int opened;
    private readonly FileStream stream;

    /// <summary>A new event file in <paramref name="folder"/>, named as TensorBoard's writer names them
    /// (events.out.tfevents.&lt;seconds&gt;.&lt;host&gt;.&lt;pid&gt;.&lt;n-th file of the process&gt;), so a resumed run's file sits
    /// beside the earlier ones and TensorBoard reads them as one run.</summary>
    public EventFile(string folder)
    {
        Directory.CreateDirectory(folder);
        long seconds = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        string name = $"events.out.tfevents.{seconds:D10}.{Environment.MachineName}.{Environment.ProcessId}.{Interlocked.Increment(ref opened) - 1}";
        stream = new FileStream(Path.Combine(folder, name), FileMode.CreateNew, FileAccess.Write, FileShare.Read);
        Write(Event(step: 0, field: 3, ByteString.CopyFromUtf8("brain.Event:2")).ToByteArray());
    }

    /// <summary>One Event at <paramref name="step"/> whose summary holds <paramref name="scalars"/>.</summary>
    public void Append(long step, IEnumerable<(string Tag, double Value)> scalars)
    {
        var summary = Message(s =>
        {
            foreach (var (tag, value) in scalars)
            {
                s.WriteTag(1, WireFormat.WireType.LengthDelimited);
                s.WriteBytes(Message(v =>
                {
                    v.WriteTag(1, WireFormat.WireType.LengthDelimited);
                    v.WriteString(tag);
                    v.WriteTag(2, WireFormat.WireType.Fixed32);
                    v.WriteFloat((float)value);
                }));
            }
        });
        Write(Event(step, field: 5, summary).ToByteArray());
    }

    /// <summary>An Event: its wall time, step and one length-delimited <paramref name="field"/> (file_version or summary).</summary>
    private static ByteString Event(long step, int field, ByteString payload) => Message(o =>
    {
        o.WriteTag(1, WireFormat.WireType.Fixed64);
        o.WriteDouble(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0);
        o.WriteTag(2, WireFormat.WireType.Varint);
        o.WriteInt64(step);
        o.WriteTag(field, WireFormat.WireType.LengthDelimited);
        o.WriteBytes(payload);
    });

    private static ByteString Message(Action<CodedOutputStream> fields)
    {
        var bytes = new MemoryStream();
        using (var o = new CodedOutputStream(bytes, leaveOpen: true)) fields(o);
        return ByteString.CopyFrom(bytes.ToArray());
    }

    private void Write(byte[] data)
    {
        Span<byte> header = stackalloc byte[12];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)data.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], Crc32C.Masked(header[..8]));
        Span<byte> footer = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(footer, Crc32C.Masked(data));
        stream.Write(header);
        stream.Write(data);
        stream.Write(footer);
        stream.Flush();
    }

    public void Dispose() => stream.Dispose();
}
