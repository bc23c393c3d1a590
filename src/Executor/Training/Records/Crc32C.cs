namespace Harness.Executor.Training.Records;

/// <summary>
/// CRC-32C (Castagnoli: reflected polynomial 0x82F63B78, initial value and final XOR 0xFFFFFFFF; RFC 3720 appendix B.4), the
/// checksum TFRecord framing uses, and its mask: a CRC stored beside the data it covers is rotated right by 15 bits and offset
/// by 0xa282ead8, so that a CRC of bytes that hold CRCs is not trivially related to them (tensorflow/core/lib/hash/crc32c.h,
/// Mask; tensorflow/tensorboard tensorboard/summary/writer/record_writer.py at 70b76c9).
/// </summary>
public static class Crc32C
{
    private static readonly uint[] Table = BuildTable();

    private static uint[] BuildTable()
    {
        var t = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0x82F63B78u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }

    public static uint Of(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFFu;
        foreach (byte b in data) c = Table[(c ^ b) & 0xFF] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
    }

    public static uint Masked(ReadOnlySpan<byte> data)
    {
        uint c = Of(data);
        return unchecked(((c >> 15) | (c << 17)) + 0xa282ead8u);
    }
}
