import Foundation
import TernCore
import TernRESP
import TernServer
import Testing

/// ACL users on real `tern server` processes: the aclfile every node loads, NOPERM for commands
/// and keys, a slow WRONGPASS, counted in /metrics, and a user made on one node used on another.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ACLProcessTests {
    @Test("aclfile users, NOPERM, key patterns, slow WRONGPASS, and a user made on n1 logs in on n2")
    func users() async throws {
        let aclDir = NSTemporaryDirectory() + "tern-acl-it-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: aclDir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: aclDir) }
        // One server.toml for the three processes here, so one file (on machines: a copy each).
        try "user admin on >adminpw ~* &* +@all\nuser reader on >r ~inbox:* resetchannels -@all +@read\n"
            .write(toFile: aclDir + "/users.acl", atomically: true, encoding: .utf8)
        let cluster = try ProcessCluster { s in
            s.password = "pw"
            s.aclFile = aclDir + "/users.acl"
        }
        defer { cluster.killAll() }
        try await cluster.startAll()

        let admin = try await cluster.client(n1)
        #expect(try await admin.send(["GET", "k"]) == .error("NOAUTH Authentication required."))
        #expect(try await admin.send(["AUTH", "admin", "adminpw"]) == .ok)
        #expect(try await admin.send(["SET", "inbox:1", "hello"]) == .ok)
        // The configured password stays the default user's.
        let d = try await cluster.client(n3)
        #expect(try await d.send(["AUTH", "pw"]) == .ok)
        #expect(try await d.send(["ACL", "WHOAMI"]) == .bulkString(Array("default".utf8)))

        let reader = try await cluster.client(n2)
        #expect(try await reader.send(["AUTH", "reader", "r"]) == .ok)
        #expect(try await reader.send(["GET", "inbox:1"]) == .bulkString(Array("hello".utf8)))
        #expect(
            try await reader.send(["SET", "inbox:1", "x"])
                == .error("NOPERM this user has no permissions to run the 'set' command"))
        #expect(
            try await reader.send(["GET", "secret"])
                == .error("NOPERM this user has no permissions to access one of the keys used as arguments"))

        // A wrong password: refused, after about a second.
        let guesser = try await cluster.client(n2)
        let start = Date()
        #expect(
            try await guesser.send(["AUTH", "reader", "guess"])
                == .error("WRONGPASS invalid username-password pair or user is disabled."))
        #expect(Date().timeIntervalSince(start) >= 0.9)
        let metrics = try await cluster.http("GET", "/metrics", node: n2).body
        func metric(_ name: String) -> String? {
            metrics.split(separator: "\n").first { $0.hasPrefix(name + "{") }.map {
                String($0.split(separator: " ").last!)
            }
        }
        #expect(metric("tern_acl_auth_failures_total") == "1.0")
        #expect(metric("tern_acl_denied_commands_total") == "1.0")
        #expect(metric("tern_acl_denied_keys_total") == "1.0")

        // A user made on n1 logs in on n2 (within the poll interval), and a rule change on n1
        // takes effect on n2's open connection.
        #expect(try await admin.send(["ACL", "SETUSER", "carol", "on", ">c", "~inbox:*", "+@all"]) == .ok)
        #expect(try await admin.send(["ACL", "SETUSER", "reader", "+set"]) == .ok)
        let made = Date()
        var loggedIn = false
        while Date().timeIntervalSince(made) < 5 {
            // A fresh connection each try: a WRONGPASS takes a second anyway.
            let c = try await cluster.client(n2)
            if try await c.send(["AUTH", "carol", "c"]) == .ok {
                loggedIn = true
                #expect(try await c.send(["ACL", "WHOAMI"]) == .bulkString(Array("carol".utf8)))
                break
            }
        }
        #expect(loggedIn, "carol, made on n1, could not AUTH on n2")
        #expect(Date().timeIntervalSince(made) < 3)
        var allowed = false
        while !allowed && Date().timeIntervalSince(made) < 5 {
            allowed = try await reader.send(["SET", "inbox:2", "x"]) == .ok
            if !allowed { try await Task.sleep(nanoseconds: 100_000_000) }
        }
        #expect(allowed, "reader's +set on n1 did not reach n2")
        // n3 sees the same users; ACL LIST is one table cluster-wide.
        try await Task.sleep(nanoseconds: 1_200_000_000)
        let list1 = try await admin.send(["ACL", "LIST"])
        let admin3 = try await cluster.client(n3)
        #expect(try await admin3.send(["AUTH", "admin", "adminpw"]) == .ok)
        #expect(try await admin3.send(["ACL", "LIST"]) == list1)
        // ACL SAVE writes the node's file.
        #expect(try await admin.send(["ACL", "SAVE"]) == .ok)
        let saved = try String(contentsOfFile: aclDir + "/users.acl", encoding: .utf8)
        #expect(saved.contains("user carol on #"))

        // A node cut off during a change (its copy of the message dropped) catches up from its
        // peers' gossip once it can hear them again.
        for o in [n1, n2] {
            #expect(try await cluster.http("POST", "/fault?peer=3&mode=drop", node: o).status == 200)
        }
        #expect(try await admin.send(["ACL", "SETUSER", "dave", "on", ">d", "+@all"]) == .ok)
        try await Task.sleep(nanoseconds: 300_000_000)
        for o in [n1, n2] {
            #expect(try await cluster.http("POST", "/fault?peer=3&mode=none", node: o).status == 200)
        }
        let healed = Date()
        var daveIn = false
        while !daveIn && Date().timeIntervalSince(healed) < 6 {
            let c = try await cluster.client(n3)
            daveIn = try await c.send(["AUTH", "dave", "d"]) == .ok
        }
        #expect(
            daveIn, "dave, made while n3 was cut off, could not AUTH on n3 after it heard its peers again")
    }
}
