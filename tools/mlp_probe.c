/* Memory-level parallelism probe (BENCHMARKS.md, "Where the misses are").
 * Random reads of a buffer of MIB mebibytes, on huge pages if HUGE is 1:
 * first a dependent pointer chase (latency), then independent reads with
 * a software prefetch DIST reads ahead (throughput, hence misses in flight).
 * Build and run: cc -O2 tools/mlp_probe.c -o /tmp/mlp_probe && /tmp/mlp_probe 160 1 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  size_t bytes=(size_t)atoi(argv[1])<<20; int huge=atoi(argv[2]);
  char*b=mmap(0,bytes,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);
  madvise(b,bytes,huge?MADV_HUGEPAGE:MADV_NOHUGEPAGE);
  size_t lines=bytes/64; for(size_t i=0;i<bytes;i+=4096)b[i]=1;
  // pointer chase
  uint64_t *idx=malloc(lines*8); for(size_t i=0;i<lines;i++)idx[i]=i;
  uint64_t s=88172645463325252ull;
  for(size_t i=lines-1;i>0;i--){s^=s<<13;s^=s>>7;s^=s<<17;size_t j=s%(i+1);uint64_t t=idx[i];idx[i]=idx[j];idx[j]=t;}
  for(size_t i=0;i<lines;i++)*(uint64_t*)(b+idx[i]*64)=idx[(i+1)%lines]*64;
  size_t p=0; int N=2000000; double t0=now(); for(int i=0;i<N;i++)p=*(uint64_t*)(b+p); double t1=now();
  printf("chase: %.1f ns/access (p=%zu)\n",(t1-t0)/N*1e9,p&1);
  // independent random reads with prefetch distance
  for(int dist=8;dist<=64;dist*=2){
    uint64_t sum=0; t0=now();
    for(int i=0;i<N;i++){ if(i+dist<N) __builtin_prefetch(b+idx[(i+dist)%lines]*64); sum+=*(uint64_t*)(b+idx[i%lines]*64);}
    t1=now(); printf("independent dist %d: %.1f ns/access (%lu)\n",dist,(t1-t0)/N*1e9,sum&1);
  }
}
