package testcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is one component of the node, started with its output in logs/<name>.log.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

func (c *Cluster) start(name, binary string, args ...string) (*process, error) {
	logFile, err := os.OpenFile(filepath.Join(c.Dir, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p := &process{name: name, cmd: exec.Command(binary, args...), log: logFile, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	c.procs = append(c.procs, p)
	// The pid file lets Cleanup stop what a crashed harness left running.
	f, err := os.OpenFile(filepath.Join(c.Dir, "pids"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return p, err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "%d %s\n", p.cmd.Process.Pid, name)
	return p, err
}

// exited returns an error when the process has exited, with the end of its log.
func (c *Cluster) exited(p *process) error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, c.logTail(p.name, 30))
	default:
		return nil
	}
}

// stop sends SIGTERM and waits up to grace, then kills.
func (p *process) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (c *Cluster) logTail(name string, lines int) string {
	data, _ := os.ReadFile(filepath.Join(c.Dir, "logs", name+".log"))
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// components are the executables a cluster runs (containerd starts the shims, the shims runc;
// registry is hack/image/registry, named is StartBIND's).
var components = map[string]bool{
	"etcd": true, "kube-apiserver": true, "kube-controller-manager": true, "kube-scheduler": true,
	"kubelet": true, "kube-proxy": true, "containerd": true, "containerd-shim-runc-v2": true, "runc": true,
	"registry": true, "named": true,
}

// ownProcesses lists the live processes of a cluster in dir: a component (by executable) whose
// command line names dir or runDir. The containerd shims are found that way too, though
// containerd starts them and they outlive it.
func ownProcesses(dir string) map[int]string {
	found := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || !components[filepath.Base(strings.TrimSuffix(exe, " (deleted)"))] {
			continue
		}
		args := strings.ReplaceAll(string(cmdline), "\x00", " ")
		if strings.Contains(args, dir+"/") || strings.Contains(args, runDir+"/") {
			found[pid] = args
		}
	}
	return found
}

// killOwnProcesses sends SIGKILL to every process ownProcesses finds and waits for them to go.
func killOwnProcesses(dir string) error {
	for range 50 {
		procs := ownProcesses(dir)
		if len(procs) == 0 {
			return nil
		}
		for pid := range procs {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var left []string
	for pid, args := range ownProcesses(dir) {
		left = append(left, fmt.Sprintf("%d %s", pid, args))
	}
	if len(left) == 0 {
		return nil
	}
	return errors.New("processes still running: " + strings.Join(left, "; "))
}
