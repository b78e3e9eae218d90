//go:build linux

package tlsmitm

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/tlsmitm/tlstest"
)

// Attack review of the raw socket I/O (rawio_linux.go, peekByte).

// The package must still build on every Linux port: peekByte named
// syscall.SYS_RECVFROM, which linux/386 does not have (its socket calls go
// through socketcall(2)).
func TestRawIOAttack_BuildsOnLinux386(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles the package")
	}
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		t.Skip("no go tool")
	}
	cmd := exec.Command(gobin, "vet", ".") // vet type-checks the tests too
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=386", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOARCH=386 go vet: %v\n%s", err, out)
	}
}

// setBlocking puts c's socket in blocking mode the way any holder of its
// *os.File does: File() dups the descriptor (sharing O_NONBLOCK with the
// connection's), and Fd() makes it blocking.
func setBlocking(t *testing.T, c net.Conn) {
	t.Helper()
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	f.Fd()
	f.Close()
}

// A raw read(2) on a blocking socket would sleep in the kernel where the
// runtime cannot stop the goroutine: the next stop-the-world (every GC)
// would wait for it, so the whole daemon would freeze until that client
// sends a byte. socketIO's calls are MSG_DONTWAIT (and linux/386 reads
// through net).
const gcFreezeChild = "TLSMITM_RAWIO_GC_FREEZE_CHILD"

// The consequence, shown in a child process (it may never return): a
// batchConn read waiting on a silent client, then a GC.
func TestRawIOAttack_BlockingSocketReadDoesNotFreezeGC(t *testing.T) {
	if os.Getenv(gcFreezeChild) == "1" {
		a, _ := tcpPair(t)
		setBlocking(t, a)
		bc := newBatchConn(a)
		go bc.Read(make([]byte, 100)) // the client sends nothing
		time.Sleep(100 * time.Millisecond)
		runtime.GC()
		fmt.Println("GC done")
		os.Exit(0) // the read stays blocked in the kernel: no cleanup can close it

	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRawIOAttack_BlockingSocketReadDoesNotFreezeGC$", "-test.count=1")
	cmd.Env = append(os.Environ(), gcFreezeChild+"=1")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("a GC froze behind a raw read(2) on a blocking socket (child killed after 5s)\n%s", out)
	}
	if err != nil || !bytes.Contains(out, []byte("GC done")) {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// Writes through one batchConn from several goroutines (crypto/tls's
// alerts, the other leg's cork flush, the relay's writes) must each leave
// whole: socketIO keeps its write state in the struct, and only the
// corkedWriter's mutex serialises it. A slow reader forces partial writes
// and readiness waits in the middle of each. Every Write is a record
// (writer, number, length, then a pattern of those): the stream parses
// only if no write was split by another's bytes.
func TestRawIOAttack_ConcurrentWritersStayWhole(t *testing.T) {
	a, peer := tcpPair(t)
	bc := newBatchConn(a)
	if bc.raw == nil {
		t.Fatal("no raw I/O")
	}
	const writers, rounds = 4, 6
	sizes := []int{300 << 10, 1000, 70 << 10, 12}
	record := func(w, r, size int) []byte {
		p := make([]byte, size)
		binary.BigEndian.PutUint16(p[0:], uint16(w))
		binary.BigEndian.PutUint16(p[2:], uint16(r))
		binary.BigEndian.PutUint32(p[4:], uint32(size))
		for i := 8; i < size; i++ {
			p[i] = byte(w*31 + r*7 + i)
		}
		return p
	}
	var want int
	for r := 0; r < rounds; r++ {
		want += sizes[r%len(sizes)]
	}
	want *= writers
	got := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		small := make([]byte, 7000)
		for buf.Len() < want {
			n, err := peer.Read(small)
			buf.Write(small[:n])
			if err != nil {
				break
			}
			if buf.Len()%(256<<10) < 7000 {
				time.Sleep(time.Millisecond) // let the socket buffer fill
			}
		}
		got <- buf.Bytes()
	}()
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				p := record(w, r, sizes[r%len(sizes)])
				if w%2 == 1 && r%2 == 0 {
					bc.corkWrites() // writes collect; another writer's uncork may send them
				}
				n, err := bc.Write(p)
				if n != len(p) || err != nil {
					t.Errorf("writer %d: Write = %d, %v", w, n, err)
					return
				}
				switch {
				case w%2 == 1 && r%2 == 1:
					err = bc.uncork()
				case r%3 == 2:
					err = bc.Flush()
				}
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if err := bc.uncork(); err != nil {
		t.Fatal(err)
	}
	b := <-got
	if len(b) != want {
		t.Fatalf("peer got %d bytes; want %d", len(b), want)
	}
	seen := map[[2]int]bool{}
	for off := 0; off < len(b); {
		if len(b)-off < 8 {
			t.Fatalf("a torn record at %d", off)
		}
		w, r := int(binary.BigEndian.Uint16(b[off:])), int(binary.BigEndian.Uint16(b[off+2:]))
		size := int(binary.BigEndian.Uint32(b[off+4:]))
		if w >= writers || r >= rounds || size != sizes[r%len(sizes)] || off+size > len(b) || seen[[2]int{w, r}] {
			t.Fatalf("garbage record header at %d (w=%d r=%d size=%d): writes were interleaved", off, w, r, size)
		}
		if !bytes.Equal(b[off:off+size], record(w, r, size)) {
			t.Fatalf("record w=%d r=%d at %d is not what was written: another write's bytes are inside it", w, r, off)
		}
		seen[[2]int{w, r}] = true
		off += size
	}
}

// smallBufPair is tcpPair with small socket buffers, so that a writer to a
// peer that never reads blocks after little (and leaves little kernel
// memory behind for the tests that follow).
func smallBufPair(t *testing.T) (a, b net.Conn) {
	a, b = tcpPair(t)
	a.(*net.TCPConn).SetWriteBuffer(8 << 10)
	b.(*net.TCPConn).SetReadBuffer(8 << 10)
	return a, b
}

// Close from another goroutine while one is blocked in a raw Write (a
// client that never reads) and another in a raw Read: both return promptly
// with net.ErrClosed, as the drain needs. A write deadline set while a
// write waits cuts it too.
func TestRawIOAttack_CloseAndDeadlineUnblockRawIO(t *testing.T) {
	t.Run("deadline set while blocked", func(t *testing.T) {
		a, _ := smallBufPair(t)
		bc := newBatchConn(a)
		errc := make(chan error, 1)
		go func() {
			_, err := bc.Write(make([]byte, 4<<20))
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		a.SetWriteDeadline(time.Now())
		select {
		case err := <-errc:
			if !isTimeout(err) {
				t.Fatalf("Write: %v; want a timeout", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("a write deadline set while the write waited did not cut it")
		}
	})
	t.Run("close", func(t *testing.T) {
		a, _ := smallBufPair(t)
		sc := &sourceConn{Conn: a} // closed below through a
		bc := newBatchConn(sc)
		werr, rerr := make(chan error, 1), make(chan error, 1)
		go func() {
			_, err := bc.Write(make([]byte, 4<<20))
			werr <- err
		}()
		go func() {
			_, err := bc.Read(make([]byte, 100))
			rerr <- err
		}()
		time.Sleep(50 * time.Millisecond)
		a.Close()
		for _, c := range []chan error{werr, rerr} {
			select {
			case err := <-c:
				if !errors.Is(err, net.ErrClosed) || !isStaleConnError(err) {
					t.Errorf("after Close: %v; want net.ErrClosed", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Close did not unblock raw I/O")
			}
		}
	})
}

// crypto/tls over batchConn: a reader, a writer stuck on a peer that never
// reads, and Close from a third goroutine (the drain, clientWatch). All
// return; the race detector sees the socketIO state serialised.
func TestRawIOAttack_TLSReaderWriterAndClose(t *testing.T) {
	ca := tlstest.NewCA(t)
	a, b := smallBufPair(t)
	leaf := ca.Leaf(t, "raw.test")
	srvDone, stop := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(srvDone)
		s := tls.Server(b, &tls.Config{Certificates: []tls.Certificate{leaf}})
		if s.Handshake() != nil {
			return
		}
		s.Write([]byte("hello")) // then never reads
		<-stop
	}()
	bc := newBatchConn(a)
	tc := tls.Client(&bc, &tls.Config{ServerName: "raw.test", RootCAs: ca.Pool()})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(tc, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q, %v", buf, err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		tc.Read(make([]byte, 10))
	}()
	go func() {
		defer wg.Done()
		bc.corkWrites()
		tc.Write(make([]byte, 4<<20))
		bc.Flush()
	}()
	time.Sleep(100 * time.Millisecond)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tc.Close()
	select {
	case <-done:
	case <-time.After(7 * time.Second):
		t.Fatal("Close left a reader or writer blocked")
	}
	a.Close()
	close(stop)
	<-srvDone
}
