import NIOCore
import Testing

@testable import TernRESP

/// Feeds `bytes` to a command decoder the way `ByteToMessageHandler` does: chunks appended to one
/// cumulation buffer, `decode` called until it returns nil, `decodeLast` at the end.
/// `cuts` are the offsets where the stream is split.
func decodeCommands(
    _ bytes: [UInt8], cuts: [Int] = [], limits: RESPLimits = RESPLimits(),
    maxBuffered: inout Int
) throws -> [RESPCommand] {
    var decoder = RESPCommandDecoder(limits: limits)
    var cumulation = ByteBuffer()
    var out: [RESPCommand] = []
    var start = 0
    for end in cuts + [bytes.count] where end >= start {
        cumulation.writeBytes(bytes[start..<end])
        start = end
        while let command = try decoder.decode(buffer: &cumulation) { out.append(command) }
        maxBuffered = max(maxBuffered, cumulation.readableBytes)
        cumulation.discardReadBytes()
    }
    while let command = try decoder.decodeLast(buffer: &cumulation, seenEOF: true) { out.append(command) }
    return out
}

func decodeCommands(_ bytes: [UInt8], cuts: [Int] = [], limits: RESPLimits = RESPLimits()) throws
    -> [RESPCommand]
{
    var ignored = 0
    return try decodeCommands(bytes, cuts: cuts, limits: limits, maxBuffered: &ignored)
}

func decodeCommands(_ text: String, limits: RESPLimits = RESPLimits()) throws -> [RESPCommand] {
    try decodeCommands(Array(text.utf8), limits: limits)
}

/// The protocol error `text` raises, or nil if it decodes.
func commandError(_ text: String, limits: RESPLimits = RESPLimits()) -> String? {
    commandError(Array(text.utf8), limits: limits)
}

func commandError(_ bytes: [UInt8], limits: RESPLimits = RESPLimits()) -> String? {
    do {
        _ = try decodeCommands(bytes, limits: limits)
        return nil
    } catch let error as RESPProtocolError {
        return error.message
    } catch {
        return "unexpected error \(error)"
    }
}

func encoded(_ value: RESPValue, _ version: RESPVersion) -> String {
    var buffer = ByteBuffer()
    RESPEncoder.encode(value, version: version, into: &buffer)
    return String(decoding: buffer.readableBytesView, as: UTF8.self)
}

func encodedBytes(_ value: RESPValue, _ version: RESPVersion) -> [UInt8] {
    var buffer = ByteBuffer()
    RESPEncoder.encode(value, version: version, into: &buffer)
    return Array(buffer.readableBytesView)
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
