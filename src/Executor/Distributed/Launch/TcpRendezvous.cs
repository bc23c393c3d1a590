using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Harness.Executor.Distributed.Launch;

/// <summary>
/// Gives rank 0's bytes (the NCCL unique id) to every rank over TCP at MASTER_ADDR:MASTER_PORT, the way
/// torchrun's store does: rank 0 listens, the others connect (retrying while rank 0 starts), say their rank,
/// and receive a length-prefixed copy. Rank 0 returns once every rank has its copy.
/// </summary>
public static class TcpRendezvous
{
    public static byte[] Share(LaunchEnvironment env, byte[]? rootPayload, TimeSpan timeout)
    {
        if (env.WorldSize == 1) return rootPayload ?? throw new ArgumentNullException(nameof(rootPayload));
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            return env.Rank == 0
                ? Serve(env, rootPayload ?? throw new ArgumentNullException(nameof(rootPayload)), cts.Token)
                : Fetch(env, cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new CommunicatorException(env.Rank == 0
                ? $"rendezvous: rank 0 waited {timeout.TotalSeconds:0} s on port {env.MasterPort} and not every one of the {env.WorldSize} ranks connected; check that all ranks started with the same MASTER_ADDR/MASTER_PORT."
                : $"rendezvous: rank {env.Rank} could not reach rank 0 at {env.MasterAddress}:{env.MasterPort} within {timeout.TotalSeconds:0} s; check MASTER_ADDR/MASTER_PORT and that rank 0 is running.");
        }
    }

    private static byte[] Serve(LaunchEnvironment env, byte[] payload, CancellationToken token)
    {
        var listener = new TcpListener(IsLoopback(env.MasterAddress) ? IPAddress.Loopback : IPAddress.Any, env.MasterPort);
        try { listener.Start(); }
        catch (SocketException e) { throw new CommunicatorException($"rendezvous: rank 0 cannot listen on port {env.MasterPort} ({e.Message}); choose another MASTER_PORT."); }
        try
        {
            var served = new HashSet<int>();
            while (served.Count < env.WorldSize - 1)
            {
                using var client = listener.AcceptTcpClientAsync(token).AsTask().GetAwaiter().GetResult();
                using var stream = client.GetStream();
                int rank = BinaryPrimitives.ReadInt32LittleEndian(ReadExactly(stream, 4, token));
                if (rank < 1 || rank >= env.WorldSize || !served.Add(rank))
                    throw new CommunicatorException($"rendezvous: a process connected as rank {rank}, which is out of range or already joined (world size {env.WorldSize}).");
                var header = new byte[4];
                BinaryPrimitives.WriteInt32LittleEndian(header, payload.Length);
                stream.Write(header);
                stream.Write(payload);
                ReadExactly(stream, 1, token); // acknowledgement: the peer has the bytes before we close
            }
            return payload;
        }
        finally { listener.Stop(); }
    }

    private static byte[] Fetch(LaunchEnvironment env, CancellationToken token)
    {
        while (true)
        {
            token.ThrowIfCancellationRequested();
            try
            {
                using var client = new TcpClient();
                client.ConnectAsync(env.MasterAddress, env.MasterPort, token).AsTask().GetAwaiter().GetResult();
                using var stream = client.GetStream();
                var me = new byte[4];
                BinaryPrimitives.WriteInt32LittleEndian(me, env.Rank);
                stream.Write(me);
                int length = BinaryPrimitives.ReadInt32LittleEndian(ReadExactly(stream, 4, token));
                var payload = ReadExactly(stream, length, token);
                stream.WriteByte(1);
                return payload;
            }
            catch (Exception e) when (e is SocketException or IOException or EndOfStreamException)
            {
                Task.Delay(100, token).GetAwaiter().GetResult(); // rank 0 not listening yet
            }
        }
    }

    private static byte[] ReadExactly(NetworkStream stream, int count, CancellationToken token)
    {
        var buffer = new byte[count];
        stream.ReadExactlyAsync(buffer, token).AsTask().GetAwaiter().GetResult();
        return buffer;
    }

    private static bool IsLoopback(string address) =>
        address is "localhost" || (IPAddress.TryParse(address, out var ip) && IPAddress.IsLoopback(ip));
}
