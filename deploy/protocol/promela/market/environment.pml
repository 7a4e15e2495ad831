/* The world around the protocol: time (term ends), job progress, and the faults, each within
 * its budget: market replicas killed, the leader's election lease lapsing (a stale leader), an
 * agent partitioned from the host apiserver (until it heals) or cut off for good, a bid or
 * renewal delivered again after it was consumed, a pod creation delivered again after the pod
 * was deleted. Request loss and hostile pods are drawn where they happen (negotiator.pml);
 * reordering is the market's free choice among waiting bids.
 *
 * A term ends only once every lease of a connected holder is paid and its pods run (terms are
 * long next to a reconcile pass): so a lease lapses only when its holder is cut off. At a term
 * end every fully running gang does a term of work: job 0 needs WORK0 terms (its lease is renewed
 * while it runs), job 1 one. */

/* every pod of job j runs, under lease L */
#define ALLRUN(j, L) ((j) == 0 -> (P_st[0] == P_RUN && P_l[0] == (L)) : \
  ((j) == 1 -> (P_st[1] == P_RUN && P_l[1] == (L) && P_st[2] == P_RUN && P_l[2] == (L)) : 0))
#define STEADY(L) (!HELD(L) || part[S_ljob[L]] || (S_lren[L] && ALLRUN(S_ljob[L], L)))
#define ANY_HELD (HELD(0) || HELD(1) || HELD(2) || HELD(3))
#define TERM_ENDS (S_tick == clock && ANY_HELD && \
  STEADY(0) && STEADY(1) && STEADY(2) && STEADY(3))

/* a pod creation delivered again, after the pod was deleted (it fits the lease it names, so the
 * lease-fit policy admits it, unbound) */
#define REPLAY_POD(q) \
  printf("@ fault: creation of pod %d delivered again\n", q); \
  P_st[q] = P_WAITING; P_l[q] = sent_pod[q] - 1; \
  P_gpu[q] = SLOTGPU(O_gpu[sent_pod[q] - 1], PSLOT(q)); \
  nev[PJOB(q)] = 1; pod_written(q)

active proctype Environment() {
end_world:
  do
  :: atomic { b_crash > 0 -> b_crash--;
       if
       :: crash[0] = 1; printf("@ fault: market 0 killed\n")
       :: crash[1] = 1; printf("@ fault: market 1 killed\n")
       fi }
  :: atomic { b_lapse > 0 && ldr != NONE -> b_lapse--; ldr = NONE; mev = 1;
       printf("@ fault: the leader's election lease lapses\n") }
  :: atomic { b_part > 0 -> b_part--;
       if
       :: part[0] = 1; printf("@ fault: agent 0 partitioned\n")
       :: JOBS >= 2 -> part[1] = 1; printf("@ fault: agent 1 partitioned\n")
       fi }
  :: atomic { part[0] && !cut[0] -> part[0] = 0; nev[0] = 1;
       printf("@ fault: agent 0 reconnected\n") }
  :: atomic { part[1] && !cut[1] -> part[1] = 0; nev[1] = 1;
       printf("@ fault: agent 1 reconnected\n") }
  :: atomic { b_cut > 0 -> b_cut--;
       if
       :: part[0] = 1; cut[0] = 1; printf("@ fault: agent 0 cut off for good\n")
       :: JOBS >= 2 -> part[1] = 1; cut[1] = 1; printf("@ fault: agent 1 cut off for good\n")
       fi }
  :: atomic { b_dup > 0 && sent_bid[0] && !O_bid[0] -> b_dup--; O_bid[0] = sent_bid[0];
       printf("@ fault: bid %d of job 0 delivered again\n", sent_bid[0]); nev[0] = 1; written() }
  :: atomic { b_dup > 0 && sent_bid[1] && !O_bid[1] -> b_dup--; O_bid[1] = sent_bid[1];
       printf("@ fault: bid %d of job 1 delivered again\n", sent_bid[1]); nev[1] = 1; written() }
  :: atomic { b_dup > 0 && sent_ren[0] && O_ren[0] == 0 -> b_dup--; O_ren[0] = sent_ren[0];
       printf("@ fault: renewal of job 0 delivered again\n");
       nev[0] = 1; written() }
  :: atomic { b_dup > 0 && sent_ren[1] && O_ren[1] == 0 -> b_dup--; O_ren[1] = sent_ren[1];
       printf("@ fault: renewal of job 1 delivered again\n");
       nev[1] = 1; written() }
  :: atomic { b_dup > 0 && sent_pod[0] && P_st[0] == P_NONE -> b_dup--; REPLAY_POD(0) }
  :: atomic { b_dup > 0 && sent_pod[1] && P_st[1] == P_NONE -> b_dup--; REPLAY_POD(1) }
  :: atomic { b_dup > 0 && sent_pod[2] && P_st[2] == P_NONE -> b_dup--; REPLAY_POD(2) }
  :: atomic { TERM_ENDS ->
       clock = !clock;
       printf("@ world: a term ends; running jobs do a term's work\n");
       if
       :: P_st[0] == P_RUN && progress0 + 1 < WORK0 -> progress0++   /* it keeps its progress */
       :: P_st[0] == P_RUN && progress0 + 1 == WORK0 ->
         progress0 = WORK0; P_st[0] = P_DONE; g_worked[0] = 1; pod_written(0)
       :: else -> skip
       fi;
       if
       :: P_st[1] == P_RUN && P_st[2] == P_RUN && P_l[1] == P_l[2] ->
         P_st[1] = P_DONE; P_st[2] = P_DONE; g_worked[1] = 1; pod_written(1); pod_written(2)
       :: else -> skip
       fi;
       written() }
  od
}
