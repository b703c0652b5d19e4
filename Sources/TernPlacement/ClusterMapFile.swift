import Foundation
import TOMLKit
import TernCore

// The cluster map's TOML form. Parsing goes through TOMLKit (toml++) so that any valid TOML is
// read; writing is done here by hand so that the file is stable, diff-friendly and ordered the way
// docs/PLACEMENT.md shows (TOMLKit would sort keys alphabetically).

extension ClusterMap {
    /// Parses and validates a map in the format of docs/PLACEMENT.md.
    /// - Throws: `ClusterMapError` naming the line, node or field that is wrong.
    public init(toml text: String) throws(ClusterMapError) {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ClusterMapError(
                .syntax, "not valid TOML at line \(error.source.begin.line): \(error.description)")
        } catch {
            throw ClusterMapError(.syntax, "not valid TOML: \(error)")
        }
        try Self.rejectUnknown(
            table, allowed: ["name", "version", "campuses", "nodes", "key_layout"], in: "the top level")
        let name = try Self.string(table, "name", in: "the top level")
        let version = try Self.integer(table, "version", in: "the top level")
        guard let campusesValue = table["campuses"] else {
            throw ClusterMapError(.missingField, "the top level has no \"campuses\"")
        }
        guard let campuses = campusesValue.array?.map({ $0.string }), campuses == ["A", "B", "C"] else {
            throw ClusterMapError(.badCampus, "\"campuses\" must be exactly [\"A\", \"B\", \"C\"]")
        }
        guard let nodesValue = table["nodes"] else {
            throw ClusterMapError(.missingField, "the map has no [[nodes]]")
        }
        guard let nodeArray = nodesValue.array else {
            throw ClusterMapError(.badValue, "\"nodes\" must be an array of tables ([[nodes]])")
        }
        var nodes: [NodeEntry] = []
        for (index, value) in nodeArray.enumerated() {
            let place = "[[nodes]] #\(index + 1)"
            guard let node = value.table else {
                throw ClusterMapError(.badValue, "\(place) is not a table")
            }
            try Self.rejectUnknown(
                node, allowed: ["id", "campus", "peer", "client", "admin", "tokens"], in: place)
            let id = try Self.integer(node, "id", in: place)
            guard id <= UInt64(UInt32.max) else {
                throw ClusterMapError(.badValue, "\(place): id \(id) does not fit in 32 bits")
            }
            let nodePlace = "node \(id)"
            let campusName = try Self.string(node, "campus", in: nodePlace)
            guard let campus = Campus.allCases.first(where: { $0.description == campusName }) else {
                throw ClusterMapError(
                    .badCampus, "\(nodePlace): campus \"\(campusName)\" is not one of A, B, C")
            }
            guard let tokensValue = node["tokens"] else {
                throw ClusterMapError(.missingTokens, "\(nodePlace) has no \"tokens\"")
            }
            guard let tokenArray = tokensValue.array else {
                throw ClusterMapError(.badToken, "\(nodePlace): \"tokens\" must be an array of strings")
            }
            var tokens: [UInt64] = []
            for tokenValue in tokenArray {
                guard let text = tokenValue.string, let token = Token.parse(text) else {
                    throw ClusterMapError(
                        .badToken,
                        "\(nodePlace): token \(tokenValue) is not a string \"0x\" + up to 16 hex digits")
                }
                tokens.append(token)
            }
            nodes.append(
                NodeEntry(
                    id: NodeID(UInt32(id)), campus: campus,
                    peerAddress: try Self.string(node, "peer", in: nodePlace),
                    clientAddress: try Self.string(node, "client", in: nodePlace),
                    adminAddress: try Self.string(node, "admin", in: nodePlace),
                    tokens: tokens))
        }
        try self.init(name: name, version: version, nodes: nodes)
        if let layout = table["key_layout"] {
            guard let text = layout.string, let l = KeyLayout(rawValue: text) else {
                throw ClusterMapError(
                    .badValue,
                    "\"key_layout\" must be one of "
                        + KeyLayout.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", "))
            }
            keyLayout = l
        }
    }

    /// The map in the format of docs/PLACEMENT.md; `ClusterMap(toml:)` reads it back equal.
    public func toml() -> String {
        var out = "# Tern cluster map: identical on every node. Written by `tern ring plan`.\n"
        out +=
            "# Tokens are ring positions (hex, 64-bit); a node owns the arc ending at each of its tokens.\n"
        out += "name = \(Self.quoted(name))\n"
        out += "version = \(version)\n"
        out += "campuses = [\"A\", \"B\", \"C\"]\n"
        if keyLayout != .perKey {
            // Fixed at creation: changing it would hide the data (docs/DATA.md, "Hash-tag groups").
            out += "key_layout = \"\(keyLayout.rawValue)\"\n"
        }
        for node in nodes {
            out += "\n[[nodes]]\n"
            out += "id = \(node.id.rawValue)\n"
            out += "campus = \"\(node.campus)\"\n"
            out += "peer = \(Self.quoted(node.peerAddress))\n"
            out += "client = \(Self.quoted(node.clientAddress))\n"
            out += "admin = \(Self.quoted(node.adminAddress))\n"
            out += "tokens = [\n"
            for token in node.tokens { out += "    \"\(Token.format(token))\",\n" }
            out += "]\n"
        }
        return out
    }

    /// Reads and validates the map at `path`.
    public init(contentsOfFile path: String) throws(ClusterMapError) {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ClusterMapError(.io, "cannot read \(path): \(error.localizedDescription)")
        }
        do {
            try self.init(toml: text)
        } catch {
            throw ClusterMapError(error.kind, "\(path): \(error.message)")
        }
    }

    /// Writes the map to `path` atomically (a reader never sees half a map).
    public func write(toFile path: String) throws(ClusterMapError) {
        do {
            try toml().write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw ClusterMapError(.io, "cannot write \(path): \(error.localizedDescription)")
        }
    }

    private static func rejectUnknown(_ table: TOMLTable, allowed: Set<String>, in place: String)
        throws(ClusterMapError)
    {
        if let key = table.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw ClusterMapError(.unknownField, "\(place) has an unknown key \"\(key)\"")
        }
    }

    private static func string(_ table: TOMLTable, _ key: String, in place: String) throws(ClusterMapError)
        -> String
    {
        guard let value = table[key] else {
            throw ClusterMapError(.missingField, "\(place) has no \"\(key)\"")
        }
        guard let string = value.string else {
            throw ClusterMapError(.badValue, "\(place): \"\(key)\" must be a string")
        }
        return string
    }

    private static func integer(_ table: TOMLTable, _ key: String, in place: String) throws(ClusterMapError)
        -> UInt64
    {
        guard let value = table[key] else {
            throw ClusterMapError(.missingField, "\(place) has no \"\(key)\"")
        }
        guard let int = value.int, int >= 0 else {
            throw ClusterMapError(.badValue, "\(place): \"\(key)\" must be a non-negative integer")
        }
        return UInt64(int)
    }

    /// A TOML basic string for `text`.
    private static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    let hex = String(scalar.value, radix: 16, uppercase: true)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
